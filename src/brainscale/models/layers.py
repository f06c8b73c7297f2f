"""Layers that every model of the package is built of: the pre-LN transformer block, its attention
(full, causal or over padded keys) and LayerScale, and the fixed sin-cos position embedding.

The encoder of every objective stacks :class:`Block`; ``causal``, ``qkv_bias`` and the ``valid``
keys of :class:`Attention` are what the peer models need.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["sincos_embedding", "Attention", "LayerScale", "Block", "init_linear"]


def sincos_embedding(positions: int, width: int) -> torch.Tensor:
    """(positions, width) fixed embedding: [sin(p w_i), cos(p w_i)], w_i = 10000^(-i / (width/2))."""
    omega = 1.0 / 10000 ** (np.arange(width // 2, dtype=np.float64) / (width / 2))
    angles = np.arange(positions, dtype=np.float64)[:, None] * omega[None, :]
    return torch.from_numpy(np.concatenate([np.sin(angles), np.cos(angles)], axis=1)).float()


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


def init_linear(module: nn.Module) -> None:
    """Truncated-normal (std 0.02) weights and zero biases for a ``Linear`` (the ViT initialisation);
    other modules are left as they are. ``model.apply(init_linear)`` initialises a whole model."""
    if isinstance(module, nn.Linear):
        nn.init.trunc_normal_(module.weight, std=0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
