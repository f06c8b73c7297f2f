"""Slice masks for the masked-token objective: whole networks or whole time patches.

For each sample and view, half the time a set of whole networks is masked (k drawn from
[int(0.65 N), int(0.85 N)) : 5 or 6 of 9), otherwise a contiguous run of whole patches
(length ``min(max(1, ceil(r P)), P) - 1`` with r ~ U(0.65, 0.85): 3 or 4 of 5, at a random start).
"""

from __future__ import annotations

import math

import torch

__all__ = ["slice_masks"]


def slice_masks(batch: int, n_networks: int, n_patches: int, *, generator: torch.Generator,
                ratio: tuple[float, float] = (0.65, 0.85)) -> torch.Tensor:
    """(batch, n_networks, n_patches) bool masks, True where a token is masked."""
    low, high = ratio
    masks = torch.zeros(batch, n_networks, n_patches, dtype=torch.bool)
    for sample in range(batch):
        if torch.rand((), generator=generator) < 0.5:
            lowest = max(1, int(low * n_networks))
            highest = max(lowest + 1, min(n_networks, int(high * n_networks)))
            count = int(torch.randint(lowest, highest, (), generator=generator))
            chosen = torch.randperm(n_networks, generator=generator)[:count]
            masks[sample, chosen] = True
        else:
            r = low + (high - low) * float(torch.rand((), generator=generator))
            length = max(min(max(1, math.ceil(r * n_patches)), n_patches) - 1, 1)
            start = int(torch.randint(0, n_patches - length + 1, (), generator=generator))
            masks[sample, :, start:start + length] = True
    return masks
