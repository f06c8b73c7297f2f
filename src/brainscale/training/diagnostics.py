"""Collapse monitors: is the teacher's representation spreading out or shrinking to a point?

Both are computed on the L2-normalised CLS tokens of the teacher encoder over one batch
(both views), every ``pretrain.monitor_every`` steps:

- ``cls_std``: the per-dimension standard deviation, averaged over dimensions and multiplied
  by sqrt(D). About 1 for vectors spread evenly over the sphere, 0 for complete collapse
  (every input mapped to the same vector), as in SimSiam's monitor.
- ``cls_rank``: the effective rank (Roy & Vetterli 2007), exp of the entropy of the normalised
  singular values of the centred batch: between 1 (one direction) and min(2B, D).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

__all__ = ["MONITOR_COLUMNS", "collapse_monitors"]

MONITOR_COLUMNS = ["cls_std", "cls_rank"]


@torch.no_grad()
def collapse_monitors(cls: torch.Tensor) -> dict[str, float]:
    """``cls_std`` and ``cls_rank`` of (samples, D) CLS tokens (see the module docstring)."""
    if cls.ndim != 2 or cls.shape[0] < 2:
        raise ValueError(f"collapse monitors need (samples >= 2, D) tokens, received shape {tuple(cls.shape)}")
    unit = F.normalize(cls.float(), dim=-1)
    if not bool(torch.isfinite(unit).all()):  # diverged weights: the loop's loss check names the step
        return {"cls_std": float("nan"), "cls_rank": float("nan")}
    spread = float(unit.std(dim=0).mean()) * math.sqrt(unit.shape[1])
    singular = torch.linalg.svdvals(unit - unit.mean(dim=0))
    if float(singular.sum()) <= 0:
        return {"cls_std": spread, "cls_rank": 1.0}
    weights = singular / singular.sum()
    weights = weights[weights > 0]
    return {"cls_std": spread, "cls_rank": float(torch.exp(-(weights * weights.log()).sum()))}
