"""A BrainLM-style masked autoencoder in one file: patch tokens with spatial positions, a
transformer encoder on the visible tokens, a light decoder that predicts the masked patches.

A crop of the C channels (457: Schaefer-400, Tian S3, Buckner 7) and T TRs is cut into
P = T / L patches of L TRs per channel: C x P tokens, channel-major (token ``c * P + p`` is
channel c's patch p). Each patch is embedded by ``Linear(L -> D)``; its position is
``Linear(3 -> D)`` of the channel's coordinates (the parcel centroid in mm, standardised by
:func:`standardise_coordinates`, kept in the ``coordinates`` buffer so that an export loads
without the data) plus the fixed sin-cos embedding of the patch's time index. A learnable CLS
token (no position) comes first. Tokens of a missing channel are replaced by a learnable
``missing_embedding`` before positions are added.

- Training (:class:`MAETraining`): the encoder sees the CLS and the visible tokens only; the
  decoder projects its outputs to ``decoder_width``, puts them back at their places among
  mask tokens, adds its own positions, runs ``decoder_depth`` blocks and predicts the L values
  of every masked patch; the loss is their mean squared error (:func:`masked_patch_loss`).
- Probing (:meth:`MAEEncoder.layer_outputs`): the encoder on all C x P tokens, no masking;
  every block's output through the final LayerNorm, (B, 1 + C*P, D), CLS first.

The architecture is :class:`~.spec.MAEConfig` (torch-free, in :mod:`.spec`).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from ...errors import ArchitectureError
from ...models.layers import Block, sincos_embedding
from ..base import TrainingModel
from .spec import MAEConfig

__all__ = ["MAEEncoder", "MAEDecoder", "MAETraining", "masked_patch_loss", "standardise_coordinates", "patchify"]


def standardise_coordinates(coordinates) -> torch.Tensor:
    """(C, 3) mm -> centred, scaled by one factor so that the mean squared norm is 3 (the shape
    of the brain kept, unit scale for ``Linear(3 -> D)``)."""
    points = torch.as_tensor(np.asarray(coordinates, dtype=np.float64))
    centred = points - points.mean(dim=0)
    scale = centred.pow(2).sum(dim=1).mean().div(3).sqrt().clamp_min(1e-6)
    return (centred / scale).float()


def patchify(x: torch.Tensor, patch_length: int) -> torch.Tensor:
    """(B, C, T) -> (B, C*P, L) patches, channel-major."""
    batch, channels, _ = x.shape
    return x.unfold(2, patch_length, patch_length).reshape(batch, -1, patch_length)


def _gather(tokens: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """(B, N, D) tokens at (B, K) indices -> (B, K, D)."""
    return tokens.gather(1, index[..., None].expand(-1, -1, tokens.shape[-1]))


class _Positions(nn.Module):
    """(C*P, D) token positions: Linear(3 -> D) of the channel coordinates + sin-cos of the patch index."""

    def __init__(self, n_patches: int, width: int):
        super().__init__()
        self.coordinate_embedding = nn.Linear(3, width)
        self.register_buffer("time_embedding", sincos_embedding(n_patches, width), persistent=False)

    def forward(self, coordinates: torch.Tensor) -> torch.Tensor:
        space = self.coordinate_embedding(coordinates)  # (C, D)
        return (space[:, None, :] + self.time_embedding[None, :, :]).flatten(0, 1)  # (C*P, D)


class MAEEncoder(nn.Module):
    """Patch tokens + positions + CLS, transformer, final LayerNorm (the exported module).

    Parameters
    ----------
    config : MAEConfig
    coordinates : (C, 3) array, optional
        The channels' coordinates in mm (standardised here); None leaves zeros, to be filled by
        ``load_state_dict`` from an export.
    """

    has_cls = True

    def __init__(self, config: MAEConfig, coordinates=None):
        super().__init__()
        self.config = config
        self.patch_embedding = nn.Linear(config.patch_length, config.width)
        if coordinates is None:
            standardised = torch.zeros(config.n_channels, 3)
        else:
            if np.shape(coordinates) != (config.n_channels, 3):
                raise ArchitectureError(f"coordinates have shape {np.shape(coordinates)}, the model expects "
                                        f"({config.n_channels}, 3): one row per channel of network_map.")
            standardised = standardise_coordinates(coordinates)
        self.register_buffer("coordinates", standardised)  # persistent: an export reloads without the data
        self.positions = _Positions(config.n_patches, config.width)
        self.cls_token = nn.Parameter(torch.randn(1, 1, config.width) * 0.02)
        self.missing_embedding = nn.Parameter(torch.randn(config.width) * 0.02)
        self.blocks = nn.ModuleList([Block(config.width, config.head_dim, config.mlp_ratio, config.layerscale_init)
                                     for _ in range(config.depth)])
        self.norm = nn.LayerNorm(config.width)

    def embed(self, x: torch.Tensor, missing_channels: torch.Tensor | None = None) -> torch.Tensor:
        """(B, C, T) -> (B, C*P, D) embedded tokens with positions (no CLS)."""
        expected = (self.config.n_channels, self.config.crop_length)
        if tuple(x.shape[1:]) != expected:
            raise ValueError(f"crops of shape {tuple(x.shape[1:])}, the MAE expects (channels, TRs) = {expected}")
        tokens = self.patch_embedding(x.unfold(2, self.config.patch_length, self.config.patch_length))  # (B, C, P, D)
        if missing_channels is not None:
            tokens = torch.where(missing_channels[:, :, None, None], self.missing_embedding.to(tokens.dtype), tokens)
        return tokens.flatten(1, 2) + self.positions(self.coordinates)

    def _with_cls(self, tokens: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.cls_token.expand(tokens.shape[0], -1, -1), tokens], dim=1)

    def encode_visible(self, x: torch.Tensor, visible_index: torch.Tensor,
                       missing_channels: torch.Tensor | None = None) -> torch.Tensor:
        """The training pass: CLS and the (B, V) visible tokens -> (B, 1 + V, D) after the final LayerNorm."""
        sequence = self._with_cls(_gather(self.embed(x, missing_channels), visible_index))
        for block in self.blocks:
            sequence = block(sequence)
        return self.norm(sequence)

    def layer_outputs(self, x: torch.Tensor, missing_channels: torch.Tensor | None = None) -> list[torch.Tensor]:
        """Every block's output on all tokens through the final LayerNorm, (B, 1 + C*P, D) each, CLS first."""
        sequence = self._with_cls(self.embed(x, missing_channels))
        outputs = []
        for block in self.blocks:
            sequence = block(sequence)
            outputs.append(self.norm(sequence))
        return outputs

    def forward(self, x: torch.Tensor, missing_channels: torch.Tensor | None = None) -> torch.Tensor:
        """(B, C, T) -> (B, 1 + C*P, D): the last layer of :meth:`layer_outputs`."""
        return self.layer_outputs(x, missing_channels)[-1]


class MAEDecoder(nn.Module):
    """Encoder outputs + mask tokens at the masked places -> the L values of each masked patch."""

    def __init__(self, config: MAEConfig):
        super().__init__()
        self.n_tokens = config.n_tokens
        width = config.decoder_width
        self.project = nn.Linear(config.width, width)
        self.mask_token = nn.Parameter(torch.randn(width) * 0.02)
        self.positions = _Positions(config.n_patches, width)
        self.blocks = nn.ModuleList([Block(width, config.decoder_head_dim, config.mlp_ratio, config.layerscale_init)
                                     for _ in range(config.decoder_depth)])
        self.norm = nn.LayerNorm(width)
        self.head = nn.Linear(width, config.patch_length)

    def forward(self, encoded: torch.Tensor, visible_index: torch.Tensor, masked_index: torch.Tensor,
                coordinates: torch.Tensor) -> torch.Tensor:
        """encoded (B, 1 + V, D), indices (B, V) and (B, M), coordinates (C, 3) -> (B, M, L)."""
        hidden = self.project(encoded)  # (B, 1 + V, d)
        batch, width = hidden.shape[0], hidden.shape[-1]
        tokens = self.mask_token.to(hidden.dtype).expand(batch, self.n_tokens, width)
        tokens = tokens.scatter(1, visible_index[..., None].expand(-1, -1, width), hidden[:, 1:])  # (B, N, d)
        sequence = torch.cat([hidden[:, :1], tokens + self.positions(coordinates)], dim=1)
        for block in self.blocks:
            sequence = block(sequence)
        return self.head(_gather(self.norm(sequence)[:, 1:], masked_index))


def masked_patch_loss(prediction: torch.Tensor, target: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """Mean squared error over the masked patches that count.

    Parameters
    ----------
    prediction, target : (B, M, L) tensors
    weight : (B, M) tensor
        1 for a patch in the loss, 0 for one left out (a missing channel's).

    Returns
    -------
    Scalar: sum of ``weight * mean_L((prediction - target)^2)`` over the sum of the weights
    (0 when no patch counts).
    """
    errors = (prediction.float() - target.float()).pow(2).mean(dim=-1)  # (B, M)
    weight = weight.to(errors.dtype)
    return (errors * weight).sum() / weight.sum().clamp_min(1.0)


class MAETraining(TrainingModel):
    """Encoder + decoder; ``forward`` returns ``{"total": MSE on the masked patches}``."""

    def __init__(self, config: MAEConfig, coordinates=None):
        super().__init__()
        self.config = config
        self.encoder = MAEEncoder(config, coordinates)
        self.decoder = MAEDecoder(config)

    def forward(self, x: torch.Tensor, missing: torch.Tensor, visible_index: torch.Tensor,
                masked_index: torch.Tensor) -> dict:
        """x (B, C, T), missing (B, C) bool, visible (B, V) and masked (B, M) token indices."""
        encoded = self.encoder.encode_visible(x, visible_index, missing)  # (B, 1 + V, D)
        prediction = self.decoder(encoded, visible_index, masked_index, self.encoder.coordinates)  # (B, M, L)
        target = _gather(patchify(x, self.config.patch_length), masked_index)  # (B, M, L)
        counts = ~missing.gather(1, masked_index // self.config.n_patches)  # a missing channel is no target
        return {"total": masked_patch_loss(prediction, target, counts)}
