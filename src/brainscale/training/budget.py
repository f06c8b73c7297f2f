"""How long pretraining runs, and which subjects each step's batch holds.

A budget is counted in one unit (``pretrain.budget.unit``):

- ``samples``: training items seen (steps x batch size), the same at every pretraining-set
  size, so that a data-scaling curve compares sizes at equal compute (the default);
- ``steps``: optimizer steps, likewise size-independent;
- ``epochs``: passes over the subset, the reference's protocol (compute grows with the subset).

Its ``total``, ``warmup`` and ``checkpoint_every`` are in that unit and are turned into steps
here (:meth:`TrainingBudget.steps` converts an objective's own lengths, such as Brain-Semantoks'
``network_decay``); every schedule is defined on those steps. Batches are cut from a
stream of passes over the subset, each pass a permutation of ``(seed, pass)``. With
``epochs`` a pass is cut into ``len(subset) // batch_size`` whole batches and the rest is
dropped (as in the reference); otherwise the passes follow each other without a break, so any
batch size works with any subset size and a batch may hold one subject twice (from two
passes, with different crops and augmentations).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import torch

from ..errors import BrainscaleError

__all__ = ["BudgetError", "TrainingBudget", "training_budget", "pass_order", "BatchStream", "BatchShares"]

UNITS = ("samples", "steps", "epochs")


class BudgetError(BrainscaleError, ValueError):
    """A budget that cannot be trained as configured (the message names the key and the fix)."""


@dataclass(frozen=True)
class TrainingBudget:
    """A budget in optimizer steps: the run's length and the lengths of its schedules."""

    unit: str
    total_steps: int
    warmup_steps: int
    checkpoint_every_steps: int
    batch_size: int
    subset_size: int

    @property
    def samples(self) -> int:
        return self.total_steps * self.batch_size

    def passes(self, steps: int) -> float:
        """Passes over the subset after ``steps`` steps."""
        return steps * self.batch_size / self.subset_size

    def steps(self, length: int) -> int:
        """Optimizer steps of ``length`` in the budget's unit (rounded down)."""
        return _steps(length, self.unit, self.batch_size, self.subset_size)


def _steps(length: int, unit: str, batch_size: int, subset_size: int) -> int:
    """Optimizer steps of ``length`` samples, steps or epochs (rounded down)."""
    if unit == "steps":
        return int(length)
    if unit == "samples":
        return int(length) // batch_size
    return int(length) * (subset_size // batch_size)


def training_budget(budget: dict, *, batch_size: int, subset_size: int) -> TrainingBudget:
    """Steps of a ``pretrain.budget`` section for one batch size and subset size.

    Raises
    ------
    BudgetError
        When the unit is unknown, the total gives no step, the warm-up is not shorter than the
        total, or (with ``epochs``) the batch is larger than the subset.
    """
    unit = budget["unit"]
    if unit not in UNITS:
        raise BudgetError(f"pretrain.budget.unit '{unit}' is not one of {', '.join(UNITS)}.")
    if unit == "epochs" and batch_size > subset_size:
        raise BudgetError(f"pretrain.batch_size {batch_size} is larger than the pretraining subset of {subset_size} "
                          "subjects, which the epochs budget cannot cut into a batch: lower the batch size, drop the "
                          "smaller subset size, or count the budget in samples or steps.")
    def steps(length: int) -> int:
        return _steps(length, unit, batch_size, subset_size)

    total = steps(budget["total"])
    if total < 1:
        raise BudgetError(f"pretrain.budget.total {budget['total']} {unit} is less than one step of batch "
                          f"{batch_size}: raise the total.")
    warmup = steps(budget["warmup"])
    if warmup >= total:
        raise BudgetError(f"pretrain.budget.warmup ({budget['warmup']} {unit}, {warmup} steps) is not shorter than "
                          f"the budget ({budget['total']} {unit}, {total} steps): lower the warm-up or raise "
                          "pretrain.budget.total.")
    return TrainingBudget(unit=unit, total_steps=total, warmup_steps=warmup,
                          checkpoint_every_steps=max(steps(budget["checkpoint_every"]), 1),
                          batch_size=batch_size, subset_size=subset_size)


@lru_cache(maxsize=64)
def pass_order(seed: int, index: int, n: int) -> tuple[int, ...]:
    """The subject order of pass ``index``: a permutation of ``range(n)`` from ``(seed, index)``."""
    generator = torch.Generator().manual_seed(int(seed) * 7919 + int(index))
    return tuple(torch.randperm(n, generator=generator).tolist())


class BatchStream:
    """The ``(pass, subject)`` items of each step's global batch (see the module docstring)."""

    def __init__(self, budget: TrainingBudget, seed: int):
        self.budget, self.seed = budget, seed
        self.n, self.batch_size = budget.subset_size, budget.batch_size
        self.whole_passes = budget.unit == "epochs"

    def batch(self, step: int) -> list[tuple[int, int]]:
        if self.whole_passes:
            per_pass = self.n // self.batch_size
            index, position = divmod(step, per_pass)
            order = pass_order(self.seed, index, self.n)
            start = position * self.batch_size
            return [(index, order[i]) for i in range(start, start + self.batch_size)]
        items = []
        for position in range(step * self.batch_size, (step + 1) * self.batch_size):
            index, offset = divmod(position, self.n)
            items.append((index, pass_order(self.seed, index, self.n)[offset]))
        return items

    def shares(self, steps: range, start: int, size: int) -> "BatchShares":
        """The items ``start:start + size`` of each step's batch (one process's part), drawn lazily."""
        return BatchShares(self, steps, start, size)

    def pass_of(self, step: int) -> int:
        """The pass the step's first item comes from."""
        return self.batch(step)[0][0]


class BatchShares:
    """A DataLoader ``batch_sampler``: one process's part of the batch of every step in ``steps``.

    Lazy, so that a long budget does not hold every batch of the run in memory.
    """

    def __init__(self, stream: BatchStream, steps: range, start: int, size: int):
        self.stream, self.steps, self.start, self.size = stream, steps, start, size

    def __len__(self) -> int:
        return len(self.steps)

    def __iter__(self):
        for step in self.steps:
            yield self.stream.batch(step)[self.start:self.start + self.size]
