"""BrainLM-style masked autoencoding (the model of :mod:`.model`).

Each crop's C x P patch tokens (C channels, P patches of ``patch_length`` TRs) are masked at
random: a fixed number ``round(mask_ratio * C * P)`` per sample, drawn in the DataLoader
workers from ``(seed, pass, item)``, so that the visible tokens of a batch stack without
padding. The encoder sees the CLS and the visible tokens, a light decoder predicts the masked
patches, and the loss is their mean squared error (the crops are z-scored per ROI already).

Missing channels (``channel_missing`` of the shards): their tokens are masked first (never
visible while there are fewer of them than masked tokens; beyond that the visible ones carry
the encoder's ``missing_embedding`` instead of data) and are never a target (weight 0 in the
loss). The probes run the encoder on all tokens with the missing ones replaced the same way.

Positions need the channels' coordinates: ``channel_coordinates`` of the shards'
``network_mapping.npz`` (written by the preprocess rule from the atlases, see
:func:`brainscale.preprocessing.atlases.channel_coordinates`).

The paper's recipe (BrainLM, Caro et al., ICLR 2024; vandijklab/BrainLM ``train.py``): 200-TR
windows cut into 20-TR patches of each parcel, ViT-MAE encoder and decoder, random masking
(``mask_ratio`` 0.2 in the released code's default; 0.75 and 0.2-0.9 variants in the paper),
MSE on the masked patches without per-patch normalisation, AdamW with weight decay 0.05, a
base learning rate of 1e-3 per 256 samples, 5 % warm-up then cosine decay, 100 epochs over
~77k scans (UK Biobank, HCP). The ``base`` preset is its 111M ViT-B-like size (768 wide,
12 blocks of 12 heads, decoder 512 wide, 8 blocks: 110.7M parameters, 85.1M in the encoder);
the config keys that reproduce it::

    pretrain:
      objectives: [mae-base]
      batch_size: 256            # the base_lr below is per 256 samples
      budget: {unit: epochs, total: 100, warmup: 5, checkpoint_every: 1}
      options:
        mae: {mask_ratio: 0.75, base_lr: 1.0e-3, weight_decay: [0.05, 0.05]}

(our schedule is linear warm-up then cosine, where BrainLM used cosine with restarts, and our
crops are z-scored per ROI where BrainLM used robust scaling.) ``tiny`` (40 TRs, 914 tokens,
32 wide) and ``small`` (60 TRs, 1371 tokens, 64 wide) fit the CPU demo.
"""

from __future__ import annotations

import numpy as np
import torch

from ...errors import TrainingError
from ...shards.reader import ShardDataset
from ..base import CropItems, Objective, item_generator
from .model import MAEEncoder, MAETraining
from .spec import SPEC, MAEConfig, mask_counts, model_config

__all__ = ["BrainLMMAE", "MaskedCrops", "draw_token_masks"]


def draw_token_masks(missing: torch.Tensor, n_patches: int, n_visible: int,
                     generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """(visible (n_visible,), masked (C*P - n_visible,)) sorted token indices of one sample.

    Tokens are ranked at random; those of a missing channel (``missing`` (C,) bool) rank
    last, so that they are masked first.
    """
    priority = torch.rand(missing.shape[0] * n_patches, generator=generator)
    priority = priority + missing.repeat_interleave(n_patches).float() * 2  # missing tokens: beyond every other
    order = torch.argsort(priority)
    return order[:n_visible].sort().values, order[n_visible:].sort().values


class MaskedCrops(CropItems):
    """Items (x (C, T), missing (C,), visible (V,), masked (M,)) keyed by ``(pass, item)``; the masks
    come from the generator of ``(seed, pass, item)``."""

    def __init__(self, crops: ShardDataset, *, n_patches: int, mask_ratio: float, seed: int, n_channels: int):
        super().__init__(crops, seed=seed)
        self.n_patches = n_patches
        self.n_visible, self.n_masked = mask_counts(n_channels * n_patches, mask_ratio)

    def draw(self, x, missing, epoch: int, item: int) -> tuple:
        visible, masked = draw_token_masks(missing, self.n_patches, self.n_visible,
                                           item_generator(self.seed, epoch, item))
        return x, missing, visible, masked


class BrainLMMAE(Objective):
    spec = SPEC
    config_class, encoder_class = MAEConfig, MAEEncoder

    def config(self) -> MAEConfig:
        return model_config(self.architecture, self.run.run, self.data.network_map)

    def coordinates(self) -> np.ndarray:
        """(C, 3) channel coordinates of the shards' ``network_mapping.npz``, checked."""
        path = self.data.shard_folder / "network_mapping.npz"
        fix = ("rerun the preprocess and shards rules (e.g. delete results/preprocess/network_mapping.npz and "
               "results/shards, then snakemake) so that the network mapping records the atlases' coordinates")
        if "channel_coordinates" not in self.data.mapping:
            raise TrainingError(f"{path}: no key 'channel_coordinates' (the channels' positions, needed by the MAE): "
                                f"these shards predate it; {fix}.")
        coordinates = np.asarray(self.data.mapping["channel_coordinates"], dtype=np.float64)
        n_channels = len(self.data.network_map)
        if coordinates.shape != (n_channels, 3):
            raise TrainingError(f"{path}: 'channel_coordinates' has shape {coordinates.shape}, expected "
                                f"({n_channels}, 3) (one row per channel); {fix}.")
        unplaced = np.flatnonzero(~np.isfinite(coordinates).all(axis=1))
        if len(unplaced):
            raise TrainingError(f"{path}: {len(unplaced)} channels have no coordinates (e.g. channels "
                                f"{unplaced[:5].tolist()}): a parcel without voxels, or a surface atlas with "
                                "neither a volumetric twin nor a mesh. Set atlases.cortical to the volumetric atlas of "
                                "the same parcels (or use a surface with a pial mesh, e.g. fsaverage5), then rerun "
                                "the preprocess and shards rules.")
        return coordinates

    def build(self) -> MAETraining:
        return MAETraining(self.config(), self.coordinates())

    def dataset(self) -> MaskedCrops:
        config = self.config()
        crops = self.data.crops(config.crop_length, preload=self.settings["preload"])
        return MaskedCrops(crops, n_patches=config.n_patches, mask_ratio=float(self.options["mask_ratio"]),
                           seed=self.data.seed, n_channels=config.n_channels)
