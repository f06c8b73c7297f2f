"""Held-out objective loss: every run scored with its own loss on data it never saw, and on its own subset.

The field's scaling results are about the objective's loss on held-out data (CortexMAE's power law in
the Brainmarks paper; Kaplan et al. 2020; Hoffmann et al. 2022). Here every checkpoint of every
objective, size and seed is scored on identical inputs:

- ``val``: crops of the *evaluation subjects*, a fixed set of ``pretrain.evaluation.subjects`` drawn
  from the probe subjects (which no pretraining subset of any size or seed contains);
- ``seen``: as many crops of the run's own pretraining subset (the gap ``seen - val`` says how much
  the run fits its subset rather than the population).

The items (crops, views, masks) are those the objective draws in training, keyed by ``(pass, item)``
under the evaluation seed instead of the run's, so they do not depend on the step, the size or the
training seed; a step's own draws (Brain-Semantoks' noise and mask decision) and schedules are those of
the run's last step, the same for every checkpoint. Scoring runs in eval mode without gradients and
touches neither the model's training state nor any random stream training uses: a run's losses and
weights are the same with the evaluation on or off.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch.utils.data import default_collate

from ..errors import TrainingError
from ..objectives.base import Step
from ..shards.splits import probe_subjects

__all__ = ["SETS", "evaluation_columns", "evaluation_steps", "evaluation_subjects", "run_evaluation_subjects",
           "HeldOutLoss"]

#: The two scored sets, in the order of their columns.
SETS = ("val", "seen")


def evaluation_columns(loss_terms) -> list[str]:
    """``log.csv`` columns of the held-out scores: ``val_loss``, ``val_<term>``, ..., ``seen_loss``, ..."""
    return [f"{name}_{column}" for name in SETS for column in ("loss", *loss_terms)]


def evaluation_steps(total_steps: int, points: int) -> list[int]:
    """Steps done (1-based counts) after which a run is scored: ``points`` evenly spaced, the last at the end."""
    return sorted({max(1, round(total_steps * k / points)) for k in range(1, points + 1)})


def evaluation_subjects(splits_dir: str | Path, n_subjects: int, seed: int, log=print) -> list[str]:
    """``n_subjects`` of the probe subjects (``probe_{train,val,test}.npy`` of ``splits_dir``), drawn with ``seed``.

    The same for every run, size and seed of a study. When QC left fewer probe subjects, all of them
    (the log says so); fewer than two cannot be scored: an empty list, with the reason logged.
    """
    folder = Path(splits_dir)
    probe = [str(subject) for subject in probe_subjects(folder)]
    if len(probe) < n_subjects:
        log(f"pretrain.evaluation.subjects is {n_subjects}, but the probe set of {folder} has {len(probe)} subjects "
            f"after QC: " + ("the held-out loss is scored on all of them" if len(probe) >= 2 else
                             "too few to score, the val_* and seen_* columns stay empty") +
            " (lower pretrain.evaluation.subjects to silence this, or raise splits.probe_fraction)")
        return probe if len(probe) >= 2 else []
    order = np.random.default_rng(seed).permutation(len(probe))
    return sorted(probe[i] for i in order[:n_subjects])


def run_evaluation_subjects(run, splits_dir: str | Path | None, log=print) -> list[str] | None:
    """The evaluation subjects of a run (a :class:`~brainscale.objectives.RunSpec`) from its study's splits
    folder; None without a folder, with ``pretrain.evaluation.subjects`` 0 or too few probe subjects."""
    settings = run.training.get("evaluation") or {}
    if splits_dir is None or not settings.get("subjects"):
        return None
    return evaluation_subjects(splits_dir, settings["subjects"], settings["seed"], log=log) or None


class HeldOutLoss:
    """Scores a training model on fixed items of the evaluation subjects and of its own subset."""

    def __init__(self, objective, budget, device: torch.device, *, held_out: list[str], subset: list[str],
                 samples: int, seed: int):
        overlap = sorted(set(held_out) & set(subset))
        if overlap:
            raise TrainingError(f"the evaluation subjects overlap the pretraining subset ({len(overlap)} subjects, "
                                f"e.g. {overlap[:3]}): the held-out loss must come from subjects no subset "
                                "contains. Check the split files (results/splits) and pretrain.evaluation.")
        self.objective, self.budget, self.device, self.seed = objective, budget, device, seed
        self.sets = {name: self._items(subjects, samples) for name, subjects in zip(SETS, (held_out, subset))}

    def _items(self, subjects: list[str], samples: int) -> list:
        dataset = self.objective.evaluation_dataset(subjects, self.seed)
        per_pass = len(dataset)
        if per_pass == 0:
            raise TrainingError(f"pretrain.evaluation: none of the {len(subjects)} subjects has a crop long enough "
                                "for this objective; check the shards.")
        keys = [(index // per_pass, index % per_pass) for index in range(samples)]
        return [dataset[key] for key in keys]  # drawn once: the same items at every point

    def score(self, model: torch.nn.Module) -> dict:
        """``{"val_loss": ..., "val_<term>": ..., "seen_loss": ..., ...}``: sample-weighted means over the items."""
        was_training = model.training
        model.eval()
        scores = {}
        try:
            with torch.no_grad():
                for name, items in self.sets.items():
                    scores.update({f"{name}_{key}": value for key, value in self._mean_losses(model, items).items()})
        finally:
            model.train(was_training)
        return scores

    def _mean_losses(self, model: torch.nn.Module, items: list) -> dict:
        totals, weights = {}, {}
        batch_size = self.budget.batch_size
        for start in range(0, len(items), batch_size):
            chunk = items[start:start + batch_size]
            step = Step(step=self.budget.total_steps - 1, budget=self.budget, device=self.device,
                        positions=list(range(len(chunk))), global_batch=len(chunk), seed=self.seed)
            tensors, options = self.objective.prepare(default_collate(chunk), step)
            losses = model(*tensors, **options)
            for key, value in losses.items():
                key = "loss" if key == "total" else key
                totals[key] = totals.get(key, 0.0) + float(value) * len(chunk)
                weights[key] = weights.get(key, 0) + len(chunk)
        return {key: totals[key] / weights[key] for key in totals}
