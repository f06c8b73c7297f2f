"""``log.csv``: one row per step, read back from the device in windows.

The loop keeps each step's losses on the device and hands them here; at a monitor, evaluation or
checkpoint step the window comes back in one host sync (so that a GPU never waits for the host), is checked
for a non-finite loss and becomes rows with the window's throughput (``samples_per_s``) and the
share of its wall time spent waiting for the DataLoader (``data_wait``).
"""

from __future__ import annotations

import csv
import math
import time
from pathlib import Path

import torch

from ..errors import TrainingError
from .diagnostics import MONITOR_COLUMNS
from .evaluation import evaluation_columns

__all__ = ["log_columns", "TrainingLog"]


def log_columns(loss_terms) -> list[str]:
    """The columns of ``log.csv`` for an objective with these loss terms (the held-out scores last)."""
    return ["step", "samples_seen", "passes", "loss", *loss_terms, "lr", "weight_decay", "momentum",
            "samples_per_s", "data_wait", *MONITOR_COLUMNS, *evaluation_columns(loss_terms)]


class TrainingLog:
    """The rows of one run's ``log.csv``: pending steps on the device, rows not yet written, rows written."""

    def __init__(self, path: Path, loss_terms, budget, *, rows: list, checkpoint_path: Path, stream):
        self.path, self.columns, self.budget = path, log_columns(loss_terms), budget
        self.evaluation_columns = evaluation_columns(loss_terms)
        self.written, self.new, self.pending = list(rows), [], []
        self.checkpoint_path, self.stream = checkpoint_path, stream
        self.window_start, self.data_wait = time.perf_counter(), 0.0

    def start(self) -> None:
        """Start the first window now (when the DataLoader is ready, as the steps begin)."""
        self.window_start, self.data_wait = time.perf_counter(), 0.0

    def restart(self) -> None:
        """Rewrite the file from the rows written so far (Snakemake may have removed it)."""
        self._write(self.written, append=False)

    def waited(self, seconds: float) -> None:
        self.data_wait += seconds

    def add(self, step: int, lr: float, weight_decay: float, momentum: float, terms: torch.Tensor,
            monitors: list) -> None:
        """A step's values; ``terms`` (total and the loss terms) stays on the device until :meth:`flush`."""
        self.pending.append((step, lr, weight_decay, momentum, terms, monitors))

    def flush(self) -> None:
        """Bring the pending steps back as rows; stop at the first non-finite loss before anything is saved."""
        if not self.pending:
            return
        values = torch.stack([terms for *_, terms, _ in self.pending]).float().cpu().tolist()
        elapsed = time.perf_counter() - self.window_start
        batch_size = self.budget.batch_size
        for (done, lr, weight_decay, momentum, _, monitors), terms in zip(self.pending, values):
            if not math.isfinite(terms[0]):
                self._non_finite(done)
            self.new.append([done, (done + 1) * batch_size, self.budget.passes(done + 1), *terms, lr, weight_decay,
                             momentum, batch_size * len(self.pending) / elapsed, self.data_wait / elapsed, *monitors,
                             *[math.nan] * len(self.evaluation_columns)])
        self.pending.clear()
        self.window_start, self.data_wait = time.perf_counter(), 0.0

    def evaluated(self, scores: dict) -> None:
        """The held-out scores of the last flushed step (a term a set did not apply stays NaN)."""
        row = self.new[-1]
        start = len(row) - len(self.evaluation_columns)
        for offset, name in enumerate(self.evaluation_columns):
            row[start + offset] = scores.get(name, math.nan)

    def commit(self, write: bool) -> list:
        """Move the new rows to the written ones (appending them to the file when ``write``); return all rows."""
        if write:
            self._write(self.new, append=True)
        self.written.extend(self.new)
        self.new.clear()
        return self.written

    @property
    def last_loss(self) -> float:
        rows = self.new or self.written
        return rows[-1][3]

    def _non_finite(self, step: int) -> None:
        last = str(self.checkpoint_path) if self.checkpoint_path.is_file() else "none (no checkpoint written yet)"
        raise TrainingError(f"non-finite loss at step {step} (pass {self.stream.pass_of(step)}); training stopped. "
                            f"Last good checkpoint: {last}. Lower pretrain.base_lr or check the shards.")

    def _write(self, rows: list, *, append: bool) -> None:
        with self.path.open("a" if append else "w", newline="") as handle:
            writer = csv.writer(handle)
            if not append:
                writer.writerow(self.columns)
            writer.writerows(rows)
