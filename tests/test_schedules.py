"""Schedules and the EMA teacher update."""

from __future__ import annotations

import copy

import pytest
import torch

from brainscale.objectives.semantoks.objective import network_loss_weight
from brainscale.training.schedules import cosine_rise, ema_update, learning_rate


def test_learning_rate_warms_up_then_decays_to_zero():
    values = [learning_rate(s, base=1.0, warmup_steps=10, total_steps=100) for s in range(101)]
    assert values[0] == 0 and values[5] == pytest.approx(0.5) and values[10] == pytest.approx(1.0)
    assert all(a >= b for a, b in zip(values[10:], values[11:])) and values[100] == pytest.approx(0.0)


def test_weight_decay_and_momentum_rise():
    assert cosine_rise(0, start=0.05, end=0.3, total_steps=50) == pytest.approx(0.05)
    assert cosine_rise(25, start=0.05, end=0.3, total_steps=50) == pytest.approx(0.175)
    assert cosine_rise(50, start=0.99, end=1.0, total_steps=50) == pytest.approx(1.0)


def test_network_loss_weight_decays_to_zero():
    assert network_loss_weight(0, weight=0.5, decay_steps=20) == pytest.approx(0.5)
    assert network_loss_weight(10, weight=0.5, decay_steps=20) == pytest.approx(0.25)
    assert network_loss_weight(20, weight=0.5, decay_steps=20) == 0.0


def test_ema_update_moves_parameters_only():
    torch.manual_seed(0)
    student = torch.nn.BatchNorm1d(4)
    with torch.no_grad():
        student.weight.fill_(2.0)
    student.running_mean.fill_(5.0)
    teacher = copy.deepcopy(student)
    with torch.no_grad():
        teacher.weight.fill_(0.0)
    teacher.running_mean.fill_(1.0)
    ema_update(teacher, student, momentum=0.75)
    assert torch.allclose(teacher.weight, torch.full((4,), 0.5))
    assert torch.allclose(teacher.running_mean, torch.ones(4))  # buffers are not averaged
