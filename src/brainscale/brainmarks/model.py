"""Any brainscale ``encoder.pt`` as a Brainmarks model: the transform our probes apply, and a wrapper.

A Brainmarks sample is one run: ``bold`` (T, 457) z-scored per channel, ``mean`` and ``std``
(1, 457) and ``tr``. The transform does what brainscale's evaluation does (rule ``embed``): the
run is resampled to the encoder's TR (2.0 s) where it differs, cut into ``n_crops`` crops of the
encoder's length (100 TRs) at evenly spaced starts, a run shorter than a crop zero-padded at the
end, and channels that are constant or not finite (absent from the run) masked. The wrapper
encodes every crop and averages over them: ``cls_embeds`` is the mean CLS token (the token mean
for an encoder without CLS), ``patch_embeds`` the crops' mean of each patch token.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..export import load_encoder
from ..objectives.base import token_features
from ..preprocessing.temporal import resample_to_tr
from ..shards.reader import pad_crop
from . import BrainmarksError

__all__ = ["EncoderTransform", "EncoderWrapper", "brainmarks_encoder", "find_encoders", "ENCODER_VARIABLE",
           "RESULTS_VARIABLE", "TARGET_TR"]

ENCODER_VARIABLE = "BRAINSCALE_ENCODER"  # the encoder.pt of model ``brainscale`` when no path is given
RESULTS_VARIABLE = "BRAINSCALE_RESULTS"  # the results folder whose runs are registered by name
TARGET_TR = 2.0  # the TR of brainscale's shards (preprocess.target_tr of every shipped config)
SPACE = "schaefer400_tians3_buckner7"


class EncoderTransform:
    """A Brainmarks sample -> ``bold`` (n_crops, channels, crop_length) and ``missing`` (channels,)."""

    def __init__(self, crop_length: int = 100, n_crops: int = 8, target_tr: float = TARGET_TR):
        if crop_length < 1 or n_crops < 1:
            raise ValueError(f"crop_length and n_crops must be positive, received {crop_length} and {n_crops}")
        self.crop_length, self.n_crops, self.target_tr = crop_length, n_crops, target_tr

    def __call__(self, sample: dict) -> dict:
        bold = torch.as_tensor(sample["bold"]).float().numpy()  # (T, channels)
        tr = float(sample["tr"])
        missing = ~np.isfinite(bold).all(axis=0)
        bold = np.where(np.isfinite(bold), bold, 0.0)
        if abs(tr - self.target_tr) > 1e-6:
            bold = resample_to_tr(bold, tr, self.target_tr)
        missing |= bold.std(axis=0) == 0
        series = bold.T.astype(np.float32)  # (channels, T)
        length = series.shape[1]
        starts = np.linspace(0, max(length - self.crop_length, 0), self.n_crops).round().astype(int)
        crops = np.stack([pad_crop(series[:, s:s + self.crop_length], self.crop_length) for s in starts])
        return {**sample, "bold": torch.from_numpy(crops), "missing": torch.from_numpy(missing)}


class EncoderWrapper(nn.Module):
    """A brainscale encoder behind Brainmarks' ``ModelWrapper`` interface (batch dict -> Embeddings)."""

    __space__ = SPACE

    def __init__(self, encoder: nn.Module):
        super().__init__()
        self.encoder = encoder

    def extra_repr(self) -> str:
        return f"'{self.__space__}'"

    def forward(self, batch: dict):
        from brainmarks.models.base import Embeddings

        crops = batch["bold"]  # (B, n_crops, channels, crop_length)
        batch_size, n_crops = crops.shape[:2]
        missing = batch.get("missing")
        if missing is not None:
            missing = missing.to(torch.bool).repeat_interleave(n_crops, dim=0)
        tokens = self.encoder.layer_outputs(crops.flatten(0, 1), missing_channels=missing)[-1]
        summary, _ = token_features(self.encoder, tokens)
        patches = tokens[:, 1:] if getattr(self.encoder, "has_cls", True) else tokens
        cls_embeds = summary.unflatten(0, (batch_size, n_crops)).mean(dim=1, keepdim=True)
        patch_embeds = patches.unflatten(0, (batch_size, n_crops)).mean(dim=1)
        return Embeddings(cls_embeds=cls_embeds, reg_embeds=None, patch_embeds=patch_embeds)


def brainmarks_encoder(path: str | Path | None = None, *, n_crops: int = 8) -> tuple:
    """Load ``encoder.pt`` as a Brainmarks ``(transform, wrapper)`` pair, frozen, in eval mode.

    Parameters
    ----------
    path : str or Path, optional
        An export of brainscale (``results/pretrain/<run>/n-<size>_seed-<seed>/encoder.pt``, a
        random-init baseline, ...); default: the ``BRAINSCALE_ENCODER`` environment variable.
    n_crops : int, default=8
        Crops per run (brainscale's ``embed.n_crops``).
    """
    path = path or os.environ.get(ENCODER_VARIABLE)
    if not path:
        raise BrainmarksError(f"Brainmarks model 'brainscale' needs an encoder: pass model_kwargs.path "
                              f"(main_logistic: --overrides model_kwargs.path=results/pretrain/.../encoder.pt) or set "
                              f"{ENCODER_VARIABLE}; or use a run's own name (brainscale_<model>_n-<size>_seed-<seed>, "
                              f"registered from {RESULTS_VARIABLE}, default ./results).")
    if not Path(path).is_file():
        raise BrainmarksError(f"{path}: no such encoder file. Train it first (snakemake --cores all) or fix the path.")
    encoder = load_encoder(path)
    n_channels = len(encoder.config.network_map)
    if n_channels != 457:
        raise BrainmarksError(f"{path}: the encoder reads {n_channels} channels, Brainmarks' {SPACE} space has 457 "
                              "(Schaefer-400, Tian S3, Buckner 7). Only encoders trained on such shards can be "
                              "evaluated there.")
    encoder.requires_grad_(False)
    return EncoderTransform(encoder.config.crop_length, n_crops), EncoderWrapper(encoder.eval())


def find_encoders(results: str | Path) -> dict[str, Path]:
    """The encoders under a results folder, by Brainmarks model name.

    ``pretrain/<model>/n-<size>_seed-<seed>/encoder.pt`` -> ``brainscale_<model>_n-<size>_seed-<seed>``;
    ``baselines/random/<model>_seed-<seed>/encoder.pt`` -> ``brainscale_random_<model>_seed-<seed>``.
    """
    results = Path(results)
    found = {}
    for path in sorted(results.glob("pretrain/*/*/encoder.pt")):
        found[f"brainscale_{path.parent.parent.name}_{path.parent.name}"] = path
    for path in sorted(results.glob("baselines/random/*/encoder.pt")):
        found[f"brainscale_random_{path.parent.name}"] = path
    return found
