"""Two augmented, optionally masked views of a subject, drawn where the data are loaded.

Each item's random draws (channels and time block to zero, amplitude scale, slice masks)
come from a generator of ``(seed, pass, item, view)``: they do not depend on the batch an
item lands in, on the process that loads it or on the number of DataLoader workers, and the
work runs in the workers. The Gaussian noise, the one heavy draw, is added by the training
step on the device.
"""

from __future__ import annotations

import torch

from .augment import apply_augmentations, draw_augmentations
from ..base import CropItems
from .masking import slice_masks
from ...shards.reader import ShardDataset

__all__ = ["AugmentedViews"]


class AugmentedViews(CropItems):
    """Wrap a ``ShardDataset(views=2)``: items are (views (2, C, T), missing (C,), masks (2, N, P)).

    Keys are ``(pass, item)`` pairs (or an item of the current pass, see ``set_epoch``).
    """

    def __init__(self, crops: ShardDataset, *, n_networks: int, n_patches: int, seed: int):
        super().__init__(crops, seed=seed)
        self.n_networks, self.n_patches = n_networks, n_patches

    def draw(self, views: torch.Tensor, missing: torch.Tensor, epoch: int, item: int) -> tuple:
        generators = [torch.Generator().manual_seed(hash((self.seed, epoch, item, view)) % (2**62))
                      for view in range(views.shape[0])]
        augmented, masks = [], []
        for view, generator in enumerate(generators):
            draws = draw_augmentations([generator], views.shape[1], views.shape[2])
            augmented.append(apply_augmentations(views[view:view + 1], *draws)[0])
            masks.append(slice_masks(1, self.n_networks, self.n_patches, generator=generator)[0])
        return torch.stack(augmented), missing, torch.stack(masks)
