"""The four crop augmentations of Brain-Semantoks, applied per crop in this order:

1. zero ``max(1, int(C * U(0, 0.1)))`` random channels;
2. zero one contiguous block of ``max(1, int(T * U(0, 0.3)))`` time points;
3. scale the amplitude by U(0.8, 1.2);
4. add Gaussian noise of standard deviation 0.1.
"""

from __future__ import annotations

import torch

__all__ = ["augment"]


def augment(crops: torch.Tensor, *, generator: torch.Generator, max_channel_fraction: float = 0.1,
            max_time_fraction: float = 0.3, scale: tuple[float, float] = (0.8, 1.2),
            noise_sd: float = 0.1) -> torch.Tensor:
    """Augment a (B, C, T) batch of crops (a new tensor; the input is left alone)."""
    out = crops.clone()
    batch, channels, length = out.shape
    for sample in range(batch):
        n_channels = max(1, int(channels * max_channel_fraction * float(torch.rand((), generator=generator))))
        out[sample, torch.randperm(channels, generator=generator)[:n_channels]] = 0.0
        n_times = max(1, int(length * max_time_fraction * float(torch.rand((), generator=generator))))
        start = int(torch.randint(0, length - n_times + 1, (), generator=generator))
        out[sample, :, start:start + n_times] = 0.0
    low, high = scale
    factors = low + (high - low) * torch.rand(batch, 1, 1, generator=generator)
    noise = torch.randn(out.shape, generator=generator) * noise_sd
    return out * factors.to(out) + noise.to(out)
