"""The Brain-JEPA encoder and predictor in one file: ROI x time-patch tokens, gradient positions.

A crop of the C channels (457: Schaefer-400, Tian S3, Buckner 7) and T TRs is cut into
P = T / L patches of L TRs per channel (the reference: 160 TRs, L = 16, P = 10). Each patch
is one token, ``Linear(L -> D)`` (the reference's ``Conv2d(1, D, kernel (1, L), stride (1, L))``).
Tokens are ROI-major: token ``c * P + p`` is patch p of channel c, as the reference's flattened
(channels, patches) grid. Positions ("brain gradient positioning") are added to every token:

- half the width is the fixed sin-cos embedding of the time-patch index p;
- the other half is a learnable ``Linear(G -> D/2)`` of the channel's G brain-gradient
  components (a persistent (C, G) buffer, so that an export reloads without the data), min-max
  scaled over all channels to [-1, 1] after the projection, as the reference does.

Missing channels are replaced by a learnable mask embedding before positions are added. A
pre-LN transformer (:class:`~brainscale.models.layers.Block`, with LayerScale) and a final
LayerNorm follow; there is no CLS token. The context encoder runs on a subset of the tokens,
``index`` (B, K) with ``valid`` (B, K) marking the real entries of a padded selection (padding
is excluded from attention as keys, so it never reaches a real token).

The predictor (narrower, as many heads as the encoder) projects the context tokens to its width,
adds its own gradient positions, appends a learnable mask token plus position at every target
position and returns ``Linear(D_pred -> D)`` of the target positions' outputs.

Their architecture is :class:`~.spec.JEPAConfig` (torch-free, in :mod:`.spec`).
"""

from __future__ import annotations

import torch
from torch import nn

from ...models.layers import Block, init_linear, sincos_embedding
from .spec import JEPAConfig

__all__ = ["GradientPositions", "JEPAEncoder", "JEPAPredictor", "select_tokens", "mask_indices"]


def mask_indices(mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, N) bool -> (index (B, K), valid (B, K)): the True positions of each row, in order,
    padded to the largest count K of the batch (padding: ``valid`` False, any index)."""
    counts = mask.sum(dim=1)
    size = int(counts.max())
    index = torch.argsort((~mask).to(torch.int8), dim=1, stable=True)[:, :size]
    valid = torch.arange(size, device=mask.device)[None, :] < counts[:, None]
    return index, valid


def select_tokens(tokens: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """(B, N, D) tokens at (B, K) indices -> (B, K, D)."""
    return torch.gather(tokens, 1, index[..., None].expand(-1, -1, tokens.shape[-1]))


class GradientPositions(nn.Module):
    """(C*P, width) positions of the ROI-major tokens: [sin-cos of the time patch, scaled Linear(gradients)]."""

    def __init__(self, config: JEPAConfig, width: int):
        super().__init__()
        self.n_channels, self.n_patches = config.n_channels, config.n_patches
        self.register_buffer("gradients", torch.zeros(config.n_channels, config.n_gradients))  # set from the data
        self.register_buffer("time", sincos_embedding(config.n_patches, width // 2), persistent=False)
        self.projection = nn.Linear(config.n_gradients, width // 2)

    def forward(self) -> torch.Tensor:
        spatial = self.projection(self.gradients)  # (C, D/2)
        low, high = spatial.min(), spatial.max()
        spatial = (spatial - low) / (high - low).clamp_min(1e-6) * 2 - 1  # [-1, 1], as the reference
        half = spatial.shape[1]
        time = self.time[None, :, :].expand(self.n_channels, -1, -1)  # (C, P, D/2)
        spatial = spatial[:, None, :].expand(-1, self.n_patches, half)  # (C, P, D/2)
        return torch.cat([time, spatial], dim=-1).reshape(self.n_channels * self.n_patches, 2 * half)


def _init_weights(module: nn.Module) -> None:
    """Truncated-normal (0.02) linear weights and zero biases, as the reference ViT (modules in
    definition order, parents first)."""
    for layer in module.modules():
        init_linear(layer)


class JEPAEncoder(nn.Module):
    """Patch tokens + gradient positions + transformer; ``forward`` returns normalised tokens (B, K, D)."""

    has_cls = False

    def __init__(self, config: JEPAConfig):
        super().__init__()
        self.config = config
        self.patch_embed = nn.Linear(config.patch_length, config.width)
        self.positions = GradientPositions(config, config.width)
        self.mask_embedding = nn.Parameter(torch.zeros(config.width))
        self.blocks = nn.ModuleList([Block(config.width, config.width // config.heads, config.mlp_ratio,
                                           config.layerscale_init) for _ in range(config.depth)])
        self.norm = nn.LayerNorm(config.width)
        _init_weights(self)
        nn.init.trunc_normal_(self.mask_embedding, std=0.02)

    def set_gradients(self, gradients: torch.Tensor) -> None:
        """Store the (C, G) brain-gradient components of the pretraining subset."""
        self.positions.gradients.copy_(torch.as_tensor(gradients, dtype=torch.float32))

    def embed(self, x: torch.Tensor, missing_channels: torch.Tensor | None = None) -> torch.Tensor:
        """(B, C, T) crops -> (B, C*P, D) embedded tokens, ROI-major."""
        length = self.config.patch_length
        tokens = self.patch_embed(x.unfold(2, length, length))  # (B, C, P, D)
        if missing_channels is not None:
            tokens = torch.where(missing_channels[:, :, None, None], self.mask_embedding.to(tokens.dtype), tokens)
        return tokens.flatten(1, 2) + self.positions().to(tokens.dtype)

    def forward(self, x: torch.Tensor, missing_channels: torch.Tensor | None = None,
                index: torch.Tensor | None = None, valid: torch.Tensor | None = None) -> torch.Tensor:
        """Encode crops, or the tokens ``index`` of them.

        Parameters
        ----------
        x : (B, C, T) tensor
        missing_channels : (B, C) bool tensor, optional
            Channels the data lack (their tokens become the mask embedding).
        index : (B, K) long tensor, optional
            The tokens to encode (ROI-major numbering); all of them when None.
        valid : (B, K) bool tensor, optional
            False where ``index`` is padding (not attended to).

        Returns
        -------
        (B, K, D) tensor after the final LayerNorm (K = C*P without ``index``).
        """
        sequence = self.embed(x, missing_channels)
        if index is not None:
            sequence = select_tokens(sequence, index)
        for block in self.blocks:
            sequence = block(sequence, valid)
        return self.norm(sequence)

    def layer_outputs(self, x: torch.Tensor, missing_channels: torch.Tensor | None = None) -> list[torch.Tensor]:
        """Every block's output (B, C*P, D) through the final LayerNorm, first block first."""
        sequence = self.embed(x, missing_channels)
        outputs = []
        for block in self.blocks:
            sequence = block(sequence)
            outputs.append(self.norm(sequence))
        return outputs


class JEPAPredictor(nn.Module):
    """Context tokens + mask tokens at the target positions -> predicted target representations."""

    def __init__(self, config: JEPAConfig):
        super().__init__()
        width = config.predictor_width
        self.embed = nn.Linear(config.width, width)
        self.positions = GradientPositions(config, width)
        self.mask_token = nn.Parameter(torch.zeros(width))
        self.blocks = nn.ModuleList([Block(width, width // config.heads, config.mlp_ratio, config.layerscale_init)
                                     for _ in range(config.predictor_depth)])
        self.norm = nn.LayerNorm(width)
        self.projection = nn.Linear(width, config.width)
        _init_weights(self)
        nn.init.trunc_normal_(self.mask_token, std=0.02)

    def forward(self, context: torch.Tensor, context_index: torch.Tensor, context_valid: torch.Tensor,
                target_index: torch.Tensor, target_valid: torch.Tensor) -> torch.Tensor:
        """(B, K, D) encoded context -> (B, M, D) predictions at the (B, M) target indices."""
        positions = self.positions().to(context.dtype)  # (C*P, D_pred)
        context = self.embed(context) + positions[context_index]  # (B, K, D_pred)
        queries = self.mask_token.to(context.dtype) + positions[target_index]  # (B, M, D_pred)
        sequence = torch.cat([context, queries], dim=1)
        valid = torch.cat([context_valid, target_valid], dim=1)
        valid = None if bool(valid.all()) else valid  # the unmasked attention kernels when nothing is padding
        for block in self.blocks:
            sequence = block(sequence, valid)
        return self.projection(self.norm(sequence[:, context.shape[1]:]))
