"""Coding-rate loss, slice masks and augmentations."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from brainscale.objectives.semantoks.augment import augment
from brainscale.objectives.semantoks.losses import coding_rate_loss
from brainscale.objectives.semantoks.masking import slice_masks


def test_coding_rate_loss_equals_a_direct_computation():
    generator = torch.Generator().manual_seed(0)
    student = F.normalize(torch.randn(2, 16, 8, generator=generator, dtype=torch.float64), dim=-1)
    teacher = F.normalize(torch.randn(2, 16, 8, generator=generator, dtype=torch.float64), dim=-1)
    loss, compression, expansion = coding_rate_loss(student, teacher, eps=0.05)
    s, t = student.numpy(), teacher.numpy()
    m, p = 16, 8
    expected_compression = ((t[0] * s[1]).sum(1).mean() + (t[1] * s[0]).sum(1).mean()) / 2
    rates = []
    for view in range(2):
        z = (s[view] + t[view]) / 2
        rates.append(0.5 * np.linalg.slogdet(np.eye(p) + p / (m * 0.05) * z.T @ z)[1])
    expected_expansion = np.mean(rates) * (p + m) / (p * m)
    assert abs(compression.item() - expected_compression) < 1e-5
    assert abs(expansion.item() - expected_expansion) < 1e-5
    assert abs(loss.item() - (-expected_compression - expected_expansion)) < 1e-5


def test_coding_rate_rewards_agreement_and_spread():
    generator = torch.Generator().manual_seed(1)
    spread = F.normalize(torch.randn(2, 64, 16, generator=generator), dim=-1)
    collapsed = F.normalize(torch.ones(2, 64, 16), dim=-1)
    assert coding_rate_loss(spread, spread)[0] < coding_rate_loss(collapsed, collapsed)[0]  # expansion wins
    other = F.normalize(torch.randn(2, 64, 16, generator=generator), dim=-1)
    assert coding_rate_loss(spread, spread)[1] > coding_rate_loss(spread, other)[1]  # agreement compresses


def test_slice_masks_cover_whole_networks_or_whole_patches():
    masks = slice_masks(2000, 9, 5, generator=torch.Generator().manual_seed(0))
    assert masks.shape == (2000, 9, 5)
    network_masks = masks.all(dim=2).any(dim=1) & ~masks.all(dim=1).any(dim=1)
    for sample in masks:
        whole_networks = sample.all(dim=1)
        whole_patches = sample.all(dim=0)
        if whole_networks.any() and not whole_patches.any():
            assert int(whole_networks.sum()) in (5, 6)
            assert torch.equal(sample, whole_networks[:, None].expand_as(sample))
        else:
            count = int(whole_patches.sum())
            assert count in (3, 4)
            positions = torch.nonzero(whole_patches).flatten()
            assert int(positions[-1] - positions[0]) == count - 1  # contiguous
    fraction = network_masks.float().mean().item()
    assert 0.45 < fraction < 0.55
    ratios = masks.float().mean(dim=(1, 2))
    assert 0.5 <= ratios.min() and ratios.max() <= 0.8


def test_augmentations():
    generator = torch.Generator().manual_seed(0)
    crops = torch.ones(64, 457, 100)
    out = augment(crops, generator=generator, noise_sd=0.0)
    assert torch.equal(crops, torch.ones(64, 457, 100))  # input untouched
    for sample in out:
        zero_channels = (sample == 0).all(dim=1).sum().item()
        zero_times = (sample == 0).all(dim=0).sum().item()
        assert 1 <= zero_channels <= 45 and 1 <= zero_times <= 30
        values = sample[sample != 0]
        assert torch.allclose(values, values[0]) and 0.8 <= values[0] <= 1.2
    noisy = augment(torch.zeros(8, 457, 100), generator=generator)
    assert abs(noisy.std().item() - 0.1) < 0.01
