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
from dataclasses import asdict, dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["SemantoksConfig", "MODEL_SIZES", "reference_network_map", "LongConv", "NetworkTokenizer", "Block",
           "SemantoksEncoder", "ProjectionHead"]

#: Channels per network in the reference order: 7 cortical (Schaefer-400, 7 networks), Tian S3, Buckner 7.
REFERENCE_NETWORK_SIZES = (61, 77, 46, 47, 26, 52, 91, 50, 7)
_PER_HEMISPHERE = ((31, 37, 23, 22, 13, 22, 52), (30, 40, 23, 25, 13, 30, 39))


def reference_network_map() -> list[int]:
    """(457,) network of each channel for Schaefer-400 (LH then RH, 7-network order), Tian S3, Buckner 7."""
    cortical = [net for hemisphere in _PER_HEMISPHERE for net, count in enumerate(hemisphere) for _ in range(count)]
    return cortical + [7] * 50 + [8] * 7


class ConfigurationError(ValueError):
    """A model configuration that cannot work (the message names the setting)."""


@dataclass
class SemantoksConfig:
    """Architecture of the encoder (saved with every checkpoint and export)."""

    width: int = 768  # D, the token and transformer width
    depth: int = 8
    head_dim: int = 64
    mlp_ratio: float = 4.0
    layerscale_init: float = 0.1
    crop_length: int = 100
    patch_length: int = 20
    network_map: list = field(default_factory=reference_network_map)  # (channels,) network index per channel
    token_width: int | None = None  # must equal width; kept to reject configs that say otherwise
    long_conv_kernel: int = 4
    long_conv_scales: int = 3
    long_conv_multiplier: float = 2.0
    head_hidden: int = 1024
    head_output: int = 128

    def __post_init__(self):
        if self.token_width is not None and self.token_width != self.width:
            raise ConfigurationError(f"model.token_width ({self.token_width}) differs from model.width "
                                     f"({self.width}): tokens feed the transformer directly, set them equal.")
        if self.width % 2 or self.width % self.head_dim:
            raise ConfigurationError(f"model.width ({self.width}) must be even and a multiple of head_dim "
                                     f"({self.head_dim}).")
        if self.crop_length % self.patch_length:
            raise ConfigurationError(f"model.patch_length ({self.patch_length}) does not divide crop_length "
                                     f"({self.crop_length}): choose a divisor (the reference uses 20 of 100).")
        networks = sorted(set(self.network_map))
        if networks != list(range(len(networks))):
            raise ConfigurationError(f"model.network_map must number networks 0..N-1 consecutively, found {networks}.")

    @property
    def n_networks(self) -> int:
        return max(self.network_map) + 1

    @property
    def n_patches(self) -> int:
        return self.crop_length // self.patch_length

    @property
    def n_channels(self) -> int:
        return len(self.network_map)

    def to_dict(self) -> dict:
        return asdict(self)


#: Named sizes; ``base`` is the released model (about 58.7M encoder parameters).
MODEL_SIZES = {
    "base": dict(width=768, depth=8, head_dim=64),
    "small": dict(width=256, depth=4, head_dim=64, head_hidden=512),
    "tiny": dict(width=64, depth=2, head_dim=32, head_hidden=128, head_output=32),
}


def sincos_embedding(positions: int, width: int) -> torch.Tensor:
    """(positions, width) fixed embedding: [sin(p w_i), cos(p w_i)], w_i = 10000^(-i / (width/2))."""
    omega = 1.0 / 10000 ** (np.arange(width // 2, dtype=np.float64) / (width / 2))
    angles = np.arange(positions, dtype=np.float64)[:, None] * omega[None, :]
    return torch.from_numpy(np.concatenate([np.sin(angles), np.cos(angles)], axis=1)).float()


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


class Attention(nn.Module):
    """Multi-head self-attention: over every token, causal (token t sees tokens <= t), or, given
    ``valid`` (B, T) bool, over the valid keys only."""

    def __init__(self, width: int, head_dim: int, *, qkv_bias: bool = False, causal: bool = False):
        super().__init__()
        self.heads, self.causal = width // head_dim, causal
        self.qkv = nn.Linear(width, 3 * width, bias=qkv_bias)
        self.proj = nn.Linear(width, width)

    def forward(self, x: torch.Tensor, valid: torch.Tensor | None = None) -> torch.Tensor:
        batch, tokens, width = x.shape
        q, k, v = self.qkv(x).view(batch, tokens, 3, self.heads, width // self.heads).permute(2, 0, 3, 1, 4)
        if valid is not None:
            if self.causal:
                raise ValueError("padded keys (valid) with causal attention are not supported: pass one of them")
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=valid[:, None, None, :])
        elif self.causal:
            out = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        else:
            out = _attention(q, k, v)  # (B, heads, tokens, head_dim)
        return self.proj(out.transpose(1, 2).reshape(batch, tokens, width))


def _attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """flash-attn on CUDA in half precision when installed, else PyTorch's SDPA (which picks its own kernel)."""
    if q.is_cuda and q.dtype in (torch.float16, torch.bfloat16) and _flash_attn() is not None:
        out = _flash_attn()(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2))  # takes (B, T, H, d)
        return out.transpose(1, 2)
    return F.scaled_dot_product_attention(q, k, v)


_FLASH: list = []


def _flash_attn():
    if not _FLASH:
        try:
            from flash_attn import flash_attn_func
        except ImportError:
            flash_attn_func = None
        _FLASH.append(flash_attn_func)
    return _FLASH[0]


class LayerScale(nn.Module):
    def __init__(self, width: int, init: float):
        super().__init__()
        self.gamma = nn.Parameter(torch.full((width,), float(init)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gamma


class Block(nn.Module):
    """Pre-LN transformer block, with LayerScale unless ``layerscale_init`` is None (the plain GPT block).

    The encoder of every objective is built of these; ``causal``, ``qkv_bias`` and the ``valid`` keys
    of :class:`Attention` are what the peer models need.
    """

    def __init__(self, width: int, head_dim: int, mlp_ratio: float = 4.0, layerscale_init: float | None = 0.1, *,
                 qkv_bias: bool = False, causal: bool = False):
        super().__init__()
        self.norm1 = nn.LayerNorm(width)
        self.attn = Attention(width, head_dim, qkv_bias=qkv_bias, causal=causal)
        self.ls1 = nn.Identity() if layerscale_init is None else LayerScale(width, layerscale_init)
        self.norm2 = nn.LayerNorm(width)
        hidden = int(width * mlp_ratio)
        self.mlp = nn.Sequential(nn.Linear(width, hidden), nn.GELU(), nn.Linear(hidden, width))
        self.ls2 = nn.Identity() if layerscale_init is None else LayerScale(width, layerscale_init)

    def forward(self, x: torch.Tensor, valid: torch.Tensor | None = None) -> torch.Tensor:
        x = x + self.ls1(self.attn(self.norm1(x), valid))
        return x + self.ls2(self.mlp(self.norm2(x)))


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
