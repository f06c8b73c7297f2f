"""Per-step schedules of every pretraining run and the EMA update.

- learning rate: linear warm-up over ``warmup_steps`` from 0, then cosine to 0 at ``total_steps``;
- weight decay: cosine from ``start`` (0.05) up to ``end`` (0.3) over all steps;
- EMA momentum (teacher or target encoder): cosine from ``start`` (0.99) up to 1.0 over all steps.

An objective's own schedules live with it (Brain-Semantoks' network-loss weight:
:func:`brainscale.objectives.semantoks.objective.network_loss_weight`).
"""

from __future__ import annotations

import math

import torch

__all__ = ["learning_rate", "cosine_rise", "ema_update"]


def learning_rate(step: int, *, base: float, warmup_steps: int, total_steps: int) -> float:
    if step < warmup_steps:
        return base * step / max(warmup_steps, 1)
    progress = (step - warmup_steps) / max(total_steps - warmup_steps, 1)
    return base * 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))


def cosine_rise(step: int, *, start: float, end: float, total_steps: int) -> float:
    """``start`` at step 0, ``end`` at ``total_steps``, along a half cosine."""
    progress = min(step / max(total_steps, 1), 1.0)
    return end - (end - start) * 0.5 * (1 + math.cos(math.pi * progress))


@torch.no_grad()
def ema_update(teacher: torch.nn.Module, student: torch.nn.Module, momentum: float) -> None:
    """teacher <- momentum * teacher + (1 - momentum) * student, parameters only (buffers stay)."""
    teacher_params = list(teacher.parameters())
    student_params = list(student.parameters())
    torch._foreach_mul_(teacher_params, momentum)
    torch._foreach_add_(teacher_params, student_params, alpha=1.0 - momentum)
