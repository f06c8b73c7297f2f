"""The four crop augmentations of Brain-Semantoks, applied per crop in this order:

1. zero ``max(1, int(C * U(0, 0.1)))`` random channels;
2. zero one contiguous block of ``max(1, int(T * U(0, 0.3)))`` time points;
3. scale the amplitude by U(0.8, 1.2);
4. add Gaussian noise of standard deviation 0.1.

The few random numbers of each crop are drawn on the CPU (``draw_augmentations``, one
generator per crop if wanted, so data-parallel processes can reproduce any crop's draw);
applying them is one vectorised expression on whatever device holds the batch.
"""

from __future__ import annotations

import torch

__all__ = ["draw_augmentations", "apply_augmentations", "augment"]


def draw_augmentations(generators: list[torch.Generator], channels: int, length: int, *,
                       max_channel_fraction: float = 0.1, max_time_fraction: float = 0.3,
                       scale: tuple[float, float] = (0.8, 1.2)) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per crop: (keep mask (B, C, T) bool as two factors, scale (B,)).

    Returns
    -------
    zero_channels : (B, C) bool
    zero_times : (B, T) bool
    factors : (B,) float
    """
    batch = len(generators)
    zero_channels = torch.zeros(batch, channels, dtype=torch.bool)
    zero_times = torch.zeros(batch, length, dtype=torch.bool)
    factors = torch.empty(batch)
    low, high = scale
    for sample, generator in enumerate(generators):
        n_channels = max(1, int(channels * max_channel_fraction * float(torch.rand((), generator=generator))))
        zero_channels[sample, torch.randperm(channels, generator=generator)[:n_channels]] = True
        n_times = max(1, int(length * max_time_fraction * float(torch.rand((), generator=generator))))
        start = int(torch.randint(0, length - n_times + 1, (), generator=generator))
        zero_times[sample, start:start + n_times] = True
        factors[sample] = low + (high - low) * float(torch.rand((), generator=generator))
    return zero_channels, zero_times, factors


def apply_augmentations(crops: torch.Tensor, zero_channels: torch.Tensor, zero_times: torch.Tensor,
                        factors: torch.Tensor, noise: torch.Tensor | None = None) -> torch.Tensor:
    """``crops`` (B, C, T) scaled, with channels and a time block zeroed, plus ``noise`` (B, C, T) if given."""
    device = crops.device
    out = crops * factors.to(device, crops.dtype)[:, None, None]
    out.masked_fill_(zero_channels.to(device)[:, :, None], 0.0)
    out.masked_fill_(zero_times.to(device)[:, None, :], 0.0)
    return out if noise is None else out.add_(noise)


def augment(crops: torch.Tensor, *, generator: torch.Generator, noise_sd: float = 0.1, **options) -> torch.Tensor:
    """Augment a (B, C, T) batch with one generator (a new tensor; the input is left alone)."""
    batch, channels, length = crops.shape
    draws = draw_augmentations([generator] * batch, channels, length, **options)
    noise = torch.randn(crops.shape, generator=generator) * noise_sd
    return apply_augmentations(crops, *draws, noise.to(crops))
