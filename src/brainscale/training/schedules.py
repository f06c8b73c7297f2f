"""Per-step schedules of Brain-Semantoks pretraining and the EMA teacher update.

- learning rate: linear warm-up over ``warmup_steps`` from 0, then cosine to 0 at ``total_steps``;
- weight decay: cosine from ``start`` (0.05) up to ``end`` (0.3) over all steps;
- teacher momentum: cosine from ``start`` (0.99) up to 1.0 over all steps;
- network-loss weight: ``weight`` (0.5) cosine-decayed to 0 over ``decay_steps`` (5 epochs), 0 after.
"""

from __future__ import annotations

import math

import torch

__all__ = ["learning_rate", "cosine_rise", "network_loss_weight", "ema_update"]


def learning_rate(step: int, *, base: float, warmup_steps: int, total_steps: int) -> float:
    if step < warmup_steps:
        return base * step / max(warmup_steps, 1)
    progress = (step - warmup_steps) / max(total_steps - warmup_steps, 1)
    return base * 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))


def cosine_rise(step: int, *, start: float, end: float, total_steps: int) -> float:
    """``start`` at step 0, ``end`` at ``total_steps``, along a half cosine."""
    progress = min(step / max(total_steps, 1), 1.0)
    return end - (end - start) * 0.5 * (1 + math.cos(math.pi * progress))


def network_loss_weight(step: int, *, weight: float, decay_steps: int) -> float:
    if step >= decay_steps:
        return 0.0
    return weight * 0.5 * (1 + math.cos(math.pi * step / max(decay_steps, 1)))


@torch.no_grad()
def ema_update(teacher: torch.nn.Module, student: torch.nn.Module, momentum: float) -> None:
    """teacher <- momentum * teacher + (1 - momentum) * student, parameters only (buffers stay)."""
    teacher_params = list(teacher.parameters())
    student_params = list(student.parameters())
    torch._foreach_mul_(teacher_params, momentum)
    torch._foreach_add_(teacher_params, student_params, alpha=1.0 - momentum)
