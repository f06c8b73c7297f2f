"""The Brain-Semantoks encoder in one file: network tokenizers, transformer, projection head.

A 100-TR crop of the 457 channels is cut into 5 patches of 20 TRs. Each of the 9
networks (7 cortical, subcortex, cerebellum) has its own tokenizer that turns its
ROIs x 20 samples into one token per patch, through two parallel branches:

- dense: ``Conv1d(R -> D/2, kernel 3, same padding)``;
- long convolution (SGConv style): a depthwise, multi-scale convolution over the 20
  samples with ``heads = ceil(D/2 / R)`` kernels per ROI (3 scales of 4 taps, scale i
  upsampled by nearest repetition x max(1, 2^(i-1)) and weighted ``multiplier^(2-i)``:
  16 taps in all, normalised by their norm at initialisation), zero padding 7 / 8, a
  skip term, then ``Linear(heads*R -> D/2)`` at each time step;

concatenated, GELU, averaged over the 20 samples, LayerNorm. The 45 tokens (network-major:
network 0's 5 patches, then network 1's, ...) get a learnable network embedding plus a
fixed sin-cos patch embedding; a learnable CLS token (no position) is prepended; masked
or missing tokens are replaced by a learnable mask embedding before positions are added.
A pre-LN transformer with LayerScale follows, then a final LayerNorm. The probing feature
``cls_avg`` is [mean of the 45 patch tokens, CLS] (2D values).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ...models.layers import Block, sincos_embedding
from .spec import SemantoksConfig

__all__ = ["LongConv", "NetworkTokenizer", "SemantoksEncoder", "ProjectionHead"]


class LongConv(nn.Module):
    """Depthwise multi-scale long convolution of each ROI with ``heads`` kernels; ROI-major output."""

    def __init__(self, n_rois: int, heads: int, kernel_size: int = 4, scales: int = 3, multiplier: float = 2.0):
        super().__init__()
        self.n_rois, self.heads = n_rois, heads
        self.kernels = nn.ParameterList([nn.Parameter(torch.randn(heads, n_rois, kernel_size)) for _ in range(scales)])
        self.skip = nn.Parameter(torch.randn(heads, n_rois))
        self.register_buffer("multiplier", torch.full((1, n_rois, 1), float(multiplier)))
        # The kernel is divided by its norm at initialisation, kept fixed afterwards.
        self.register_buffer("kernel_norm", torch.ones(heads, n_rois, 1))
        with torch.no_grad():
            self.kernel_norm.copy_(self._raw_kernel().norm(dim=-1, keepdim=True))

    def _raw_kernel(self) -> torch.Tensor:
        scales = len(self.kernels)
        parts = []
        for i, kernel in enumerate(self.kernels):
            factor = 2 ** max(0, i - 1)
            parts.append(kernel.repeat_interleave(factor, dim=-1) * self.multiplier ** (scales - 1 - i))
        return torch.cat(parts, dim=-1)  # (heads, R, taps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # x: (B, R, L) -> (B, R * heads, L), channel = roi * heads + head
        kernel = self._raw_kernel() / self.kernel_norm
        taps = kernel.shape[-1]
        left = (taps - 1) // 2
        weight = kernel.flip(-1).permute(1, 0, 2).reshape(self.n_rois * self.heads, 1, taps)
        y = F.conv1d(F.pad(x, (left, taps - 1 - left)), weight, groups=self.n_rois)
        skip = x[:, :, None, :] * self.skip.t()[None, :, :, None]  # (B, R, heads, L)
        return y + skip.reshape(y.shape)


class NetworkTokenizer(nn.Module):
    """One network's ROIs x patch samples -> one token (dense and long-convolution branches)."""

    def __init__(self, n_rois: int, width: int, config: SemantoksConfig):
        super().__init__()
        half = width // 2
        heads = math.ceil(half / n_rois)
        self.dense = nn.Conv1d(n_rois, half, kernel_size=3, padding="same")
        self.long_conv = LongConv(n_rois, heads, config.long_conv_kernel, config.long_conv_scales,
                                  config.long_conv_multiplier)
        self.projection = nn.Linear(heads * n_rois, half)
        self.norm = nn.LayerNorm(width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # x: (B*P, R, L) -> (B*P, D)
        dense = self.dense(x)  # (B*P, D/2, L)
        long = self.projection(self.long_conv(x).transpose(1, 2)).transpose(1, 2)  # (B*P, D/2, L)
        return self.norm(F.gelu(torch.cat([dense, long], dim=1)).mean(dim=-1))


class SemantoksEncoder(nn.Module):
    """Tokenizers + transformer; ``forward`` returns the normalised tokens (B, 1 + N*P, D)."""

    def __init__(self, config: SemantoksConfig):
        super().__init__()
        self.config = config
        network_map = torch.as_tensor(config.network_map)
        self.channels_of_network = [torch.nonzero(network_map == n).flatten() for n in range(config.n_networks)]
        for n, channels in enumerate(self.channels_of_network):
            self.register_buffer(f"channels_{n}", channels, persistent=False)
        self.tokenizers = nn.ModuleList(
            [NetworkTokenizer(len(channels), config.width, config) for channels in self.channels_of_network])
        self.network_embedding = nn.Parameter(torch.randn(config.n_networks, config.width) * 0.02)
        self.register_buffer("patch_embedding", sincos_embedding(config.n_patches, config.width))
        self.cls_token = nn.Parameter(torch.randn(1, 1, config.width) * 0.02)
        self.mask_embedding = nn.Parameter(torch.randn(config.width) * 0.02)
        self.blocks = nn.ModuleList([Block(config.width, config.head_dim, config.mlp_ratio, config.layerscale_init)
                                     for _ in range(config.depth)])
        self.norm = nn.LayerNorm(config.width)

    def tokenize(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, T) -> (B, N, P, D) patch tokens."""
        batch = x.shape[0]
        patches = x.unfold(2, self.config.patch_length, self.config.patch_length)  # (B, C, P, L)
        n_patches = patches.shape[2]
        tokens = []
        for n, tokenizer in enumerate(self.tokenizers):
            rois = patches.index_select(1, getattr(self, f"channels_{n}"))  # (B, R, P, L)
            rois = rois.transpose(1, 2).reshape(batch * n_patches, rois.shape[1], -1)
            tokens.append(tokenizer(rois).view(batch, n_patches, -1))
        return torch.stack(tokens, dim=1)

    def missing_networks(self, missing_channels: torch.Tensor) -> torch.Tensor:
        """(B, C) bool -> (B, N) bool: a network is missing when all its channels are."""
        return torch.stack([missing_channels.index_select(1, getattr(self, f"channels_{n}")).all(dim=1)
                            for n in range(self.config.n_networks)], dim=1)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None,
                missing_channels: torch.Tensor | None = None) -> torch.Tensor:
        """Encode crops.

        Parameters
        ----------
        x : (B, C, T) tensor
        mask : (B, N, P) bool tensor, optional
            Tokens to replace by the mask embedding (masked-token objective).
        missing_channels : (B, C) bool tensor, optional
            Channels the data lack; a network whose channels are all missing is masked.

        Returns
        -------
        (B, 1 + N*P, D) tensor after the final LayerNorm; index 0 is CLS.
        """
        sequence = self.embed(x, mask, missing_channels)
        for block in self.blocks:
            sequence = block(sequence)
        return self.norm(sequence)

    def embed(self, x: torch.Tensor, mask: torch.Tensor | None = None,
              missing_channels: torch.Tensor | None = None) -> torch.Tensor:
        """The input sequence of the first block (B, 1 + N*P, D): CLS, then the embedded tokens."""
        tokens = self.tokenize(x)  # (B, N, P, D)
        hidden = torch.zeros(tokens.shape[:3], dtype=torch.bool, device=x.device) if mask is None else mask
        if missing_channels is not None:
            hidden = hidden | self.missing_networks(missing_channels)[:, :, None]
        tokens = torch.where(hidden[..., None], self.mask_embedding.to(tokens.dtype), tokens)
        tokens = tokens + self.network_embedding[:, None, :] + self.patch_embedding[None, :, :]
        batch = tokens.shape[0]
        return torch.cat([self.cls_token.expand(batch, -1, -1), tokens.flatten(1, 2)], dim=1)

    def layer_outputs(self, x: torch.Tensor, missing_channels: torch.Tensor | None = None) -> list[torch.Tensor]:
        """Every block's output through the final LayerNorm, first block first (layer-wise probing).

        The last entry equals ``forward(x)``; earlier ones are normalised by the same LayerNorm so
        that every layer's features live on one scale (as DINOv2's intermediate layers do).
        """
        sequence = self.embed(x, None, missing_channels)
        outputs = []
        for block in self.blocks:
            sequence = block(sequence)
            outputs.append(self.norm(sequence))
        return outputs

    @staticmethod
    def cls_avg(tokens: torch.Tensor) -> torch.Tensor:
        """The probing feature: [mean of the patch tokens, CLS] (B, 2D)."""
        return torch.cat([tokens[:, 1:].mean(dim=1), tokens[:, 0]], dim=1)


class ProjectionHead(nn.Module):
    """Linear(D -> hidden) - GELU - Linear(hidden -> out), then L2 normalisation."""

    def __init__(self, config: SemantoksConfig):
        super().__init__()
        self.mlp = nn.Sequential(nn.Linear(config.width, config.head_hidden), nn.GELU(),
                                 nn.Linear(config.head_hidden, config.head_output))
        for layer in (self.mlp[0], self.mlp[2]):
            nn.init.trunc_normal_(layer.weight, std=0.02)
            nn.init.zeros_(layer.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.mlp(x), dim=-1, eps=1e-6 if x.dtype == torch.float16 else 1e-12)
