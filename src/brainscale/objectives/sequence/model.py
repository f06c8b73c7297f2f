"""Token-per-TR sequence models of learning-from-brains (Thomas, Ré, Poldrack, NeurIPS 2022).

Every time point of a crop is one token (:class:`TokenEmbedding`): the 457 channel values of
that TR through ``Linear(C -> D)`` and a LayerNorm, plus

- a learned embedding of the *time since the crop start*, in bins of ``time_bin`` = 0.2 s up
  to ``max_time`` = 300 s (the paper's), the time of TR index i being ``i * tr`` (the crops are
  at the pipeline's target TR, so positions are seconds, not indices);
- the missing channels of a run (absent parcels) are zeroed before the projection and flagged
  by a learned embedding of the (C,) missing mask, ``Linear(C -> D, bias=False)`` of the 0/1
  flags, added to every token of the crop: the model sees *which* channels are unknown, not a
  zero it would read as a value. Network-BERT presents its masked channels the same way.

A masked TR (Seq-BERT) has its content replaced by a learned mask token (owned by the training
model, which passes it in) before the time embedding is added.

Encoders (all with the probing interface: ``config``, ``has_cls``, ``layer_outputs(x,
missing_channels=None)`` -> ``depth`` tensors (B, tokens, D) through the final LayerNorm,
``forward`` = the last of them):

- :class:`CausalEncoder`, GPT-style: pre-LN blocks with a causal attention mask (token t
  attends to tokens <= t); no CLS, ``has_cls = False`` (the probes take the token mean);
- :class:`BidirectionalEncoder`, BERT-style: full attention, a learned CLS token (no time
  embedding) first, ``has_cls = True``;
- :class:`LSTMEncoder`: stacked bidirectional LSTMs (D/2 per direction, [forward, backward]
  concatenated, added to the layer's input); layer l's tokens are its T outputs, preceded by
  their mean over time, the *pooled state* (``has_cls = True``: the probes' ``cls`` is the
  pooled state through the final LayerNorm, which for the last layer is exactly what the
  autoencoder's decoder reads; their ``mean`` is the mean of the normalised outputs).
  :class:`LSTMDecoder` turns a pooled state back into a crop.

The blocks are :class:`brainscale.models.layers.Block` (pre-LN, LayerScale; ``layerscale_init``
= 1.0 makes them the plain GPT/BERT blocks at initialisation) with a bias on the q, k, v projection.
The configs are in :mod:`.config` (torch-free).
"""

from __future__ import annotations

import torch
from torch import nn

from ...models.layers import Block
from .config import LSTMConfig, SequenceConfig, TransformerConfig

__all__ = ["SequenceConfig", "TransformerConfig", "LSTMConfig", "time_bins", "TokenEmbedding",
           "CausalEncoder", "BidirectionalEncoder", "LSTMEncoder", "LSTMDecoder",
           "masked_l1"]


def time_bins(config: SequenceConfig) -> torch.Tensor:
    """(crop_length,) bin of each TR's time since the crop start, ``round(i * tr / time_bin)``, capped."""
    seconds = torch.arange(config.crop_length, dtype=torch.float64) * config.tr
    return torch.floor(seconds / config.time_bin + 0.5).long().clamp_max(config.n_time_bins - 1)


class TokenEmbedding(nn.Module):
    """(B, C, T) crop -> (B, T, D) tokens: LayerNorm(Linear(x_t)) + missing flags + time (module docstring)."""

    def __init__(self, config: SequenceConfig):
        super().__init__()
        self.project = nn.Linear(config.n_channels, config.width)
        self.norm = nn.LayerNorm(config.width)
        self.missing = nn.Linear(config.n_channels, config.width, bias=False)
        self.time = nn.Embedding(config.n_time_bins, config.width)
        nn.init.normal_(self.missing.weight, std=0.02)
        nn.init.normal_(self.time.weight, std=0.02)
        self.register_buffer("bins", time_bins(config), persistent=False)

    def forward(self, x: torch.Tensor, hidden_channels: torch.Tensor | None = None,
                masked_steps: torch.Tensor | None = None, mask_token: torch.Tensor | None = None) -> torch.Tensor:
        """Embed crops.

        Parameters
        ----------
        x : (B, C, T) tensor, T <= crop_length
        hidden_channels : (B, C) bool tensor, optional
            Channels the model must not read (missing, or masked): zeroed and flagged.
        masked_steps : (B, T) bool tensor, optional
            TRs whose token is replaced by ``mask_token`` (D,).
        """
        length = x.shape[-1]
        if length > self.bins.shape[0]:
            raise ValueError(f"crops of {length} TRs are longer than the model's crop_length ({self.bins.shape[0]})")
        if hidden_channels is not None:
            x = x.masked_fill(hidden_channels[:, :, None], 0.0)
        tokens = self.norm(self.project(x.transpose(1, 2)))  # (B, T, D)
        if hidden_channels is not None:
            tokens = tokens + self.missing(hidden_channels.to(tokens.dtype))[:, None, :]
        if masked_steps is not None:
            tokens = torch.where(masked_steps[..., None], mask_token.to(tokens.dtype), tokens)
        return tokens + self.time(self.bins[:length])[None]


class _TransformerEncoder(nn.Module):
    causal: bool
    has_cls: bool

    def __init__(self, config: TransformerConfig):
        super().__init__()
        self.config = config
        self.embedding = TokenEmbedding(config)
        if self.has_cls:
            self.cls_token = nn.Parameter(torch.randn(1, 1, config.width) * 0.02)
        self.blocks = nn.ModuleList([Block(config.width, config.head_dim, config.mlp_ratio, config.layerscale_init,
                                           qkv_bias=True, causal=self.causal) for _ in range(config.depth)])
        self.norm = nn.LayerNorm(config.width)

    def embed(self, x: torch.Tensor, missing_channels: torch.Tensor | None = None, **masking) -> torch.Tensor:
        """The input sequence of the first block (B, [1 +] T, D)."""
        tokens = self.embedding(x, missing_channels, **masking)
        if self.has_cls:
            tokens = torch.cat([self.cls_token.expand(tokens.shape[0], -1, -1).to(tokens.dtype), tokens], dim=1)
        return tokens

    def layer_outputs(self, x: torch.Tensor, missing_channels: torch.Tensor | None = None,
                      **masking) -> list[torch.Tensor]:
        """Every block's output through the final LayerNorm, first block first: ``depth`` x (B, tokens, D)."""
        sequence, outputs = self.embed(x, missing_channels, **masking), []
        for block in self.blocks:
            sequence = block(sequence)
            outputs.append(self.norm(sequence))
        return outputs

    def forward(self, x: torch.Tensor, missing_channels: torch.Tensor | None = None,
                masked_steps: torch.Tensor | None = None, mask_token: torch.Tensor | None = None) -> torch.Tensor:
        """(B, [1 +] T, D) tokens of the last block through the final LayerNorm."""
        sequence = self.embed(x, missing_channels, masked_steps=masked_steps, mask_token=mask_token)
        for block in self.blocks:
            sequence = block(sequence)
        return self.norm(sequence)


class CausalEncoder(_TransformerEncoder):
    """GPT-style decoder over the TR tokens (B, T, D): the output at t depends on TRs <= t only."""

    causal, has_cls = True, False


class BidirectionalEncoder(_TransformerEncoder):
    """BERT-style encoder: (B, 1 + T, D), CLS first."""

    causal, has_cls = False, True


class LSTMEncoder(nn.Module):
    """Stacked bidirectional LSTMs over the TR tokens; tokens (B, 1 + T, D): pooled state, hidden states."""

    has_cls = True

    def __init__(self, config: LSTMConfig):
        super().__init__()
        self.config = config
        self.embedding = TokenEmbedding(config)
        self.layers = nn.ModuleList([nn.LSTM(config.width, config.width // 2, batch_first=True, bidirectional=True)
                                     for _ in range(config.depth)])
        self.norm = nn.LayerNorm(config.width)

    def states(self, x: torch.Tensor, missing_channels: torch.Tensor | None = None) -> list[torch.Tensor]:
        """Each layer's (B, T, D) output before any norm: its input plus its [forward, backward] hidden states."""
        sequence, states = self.embedding(x, missing_channels), []
        for layer in self.layers:
            hidden, _ = layer(sequence)
            sequence = sequence + hidden  # residual stacking, as the reference's skip connections
            states.append(sequence)
        return states

    @staticmethod
    def pooled(states: torch.Tensor) -> torch.Tensor:
        """(B, T, D) -> (B, D): the mean over time, the autoencoder's bottleneck."""
        return states.mean(dim=1)

    def layer_outputs(self, x: torch.Tensor, missing_channels: torch.Tensor | None = None) -> list[torch.Tensor]:
        """Per layer (B, 1 + T, D) through the final LayerNorm: the pooled state, then the hidden states."""
        return [self.norm(torch.cat([self.pooled(h)[:, None], h], dim=1)) for h in self.states(x, missing_channels)]

    def forward(self, x: torch.Tensor, missing_channels: torch.Tensor | None = None) -> torch.Tensor:
        return self.layer_outputs(x, missing_channels)[-1]


class LSTMDecoder(nn.Module):
    """A pooled state (B, D) -> a crop (B, C, T): an LSTM fed the state plus a time embedding at every step."""

    def __init__(self, config: LSTMConfig):
        super().__init__()
        self.state = nn.Linear(config.width, config.width)
        self.time = nn.Embedding(config.n_time_bins, config.width)
        nn.init.normal_(self.time.weight, std=0.02)
        self.lstm = nn.LSTM(config.width, config.width, num_layers=config.decoder_depth, batch_first=True)
        self.head = nn.Linear(config.width, config.n_channels)
        self.register_buffer("bins", time_bins(config), persistent=False)

    def forward(self, pooled: torch.Tensor, length: int) -> torch.Tensor:
        inputs = self.state(pooled)[:, None, :] + self.time(self.bins[:length])[None]  # (B, T, D)
        out, _ = self.lstm(inputs)
        return self.head(out).transpose(1, 2)


def masked_l1(prediction: torch.Tensor, target: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """Mean absolute error over the entries where ``weight`` (bool, broadcastable) is True (0 if none)."""
    weight = weight.expand_as(target).float()
    return ((prediction.float() - target.float()).abs() * weight).sum() / weight.sum().clamp_min(1.0)
