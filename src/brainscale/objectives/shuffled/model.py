"""Shuffled autoregression (boldGPT on time series): a causal transformer with next-position queries.

A crop (457 channels x ``crop_length`` TRs) is cut into ``n_patches`` patches of
``patch_length`` TRs; each of the 9 networks (7 cortical, subcortex, cerebellum) has its own
tokenizer, ``Linear(R * L -> D)`` of its R ROIs x L samples (ROI-major), so that the N*P tokens
are (network, time patch) pairs. The position of a token is a learned network embedding plus a
fixed sin-cos embedding of its patch index; its *next-position query* is a learned linear map of
the position it is asked to predict (boldGPT's ``next_pos_query``). A network whose channels are
all missing has its tokens replaced by a learned mask embedding (positions are still added).

Training (one random order of the M = N*P tokens per sample, ``order`` (B, M)): step 0 is a
learned start token, step k > 0 is token ``order[k-1]`` plus its position; every step k adds the
query of ``order[k]``. Under causal attention, output k has seen tokens ``order[:k]`` and the
position it must predict, ``order[k]``: :meth:`ShuffledEncoder.predictions` returns the outputs
sent back to the natural (network-major) token order, (B, N, P, D), for the heads of
:class:`ShuffledTraining` (one per network: the logits of its codebook, or its patch values).

Probing (:meth:`ShuffledEncoder.layer_outputs`): the tokens in their natural order under the same
causal attention (one of the orders training saw), start token first; the features are the M
steps that carry a token, each with the query of the next token (the last token, with nothing
after it, carries no query). Every layer goes through the final LayerNorm; there is no CLS
(``has_cls = False``: the probes' ``cls`` and ``mean`` are both the token mean).

The architecture is :class:`~.spec.ShuffledConfig` (torch-free, in :mod:`.spec`).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ...errors import ArchitectureError
from ...models.layers import Block, init_linear, sincos_embedding
from ..base import TrainingModel
from .spec import ShuffledConfig

__all__ = ["ShuffledEncoder", "ShuffledTraining", "code_loss", "patch_loss"]


class ShuffledEncoder(nn.Module):
    """Per-network tokenizers, positions, next-position queries and the causal transformer."""

    has_cls = False

    def __init__(self, config: ShuffledConfig):
        super().__init__()
        self.config = config
        width, length = config.width, config.patch_length
        self.channels_of_network = config.channels_of_network()
        for n, channels in enumerate(self.channels_of_network):
            self.register_buffer(f"channels_{n}", torch.as_tensor(channels, dtype=torch.long), persistent=False)
        self.tokenizers = nn.ModuleList([nn.Linear(len(channels) * length, width)
                                         for channels in self.channels_of_network])
        self.network_embedding = nn.Parameter(torch.empty(config.n_networks, width))
        self.register_buffer("patch_embedding", sincos_embedding(config.n_patches, width))
        self.query = nn.Linear(width, width)  # position -> next-position query
        self.start_token = nn.Parameter(torch.empty(width))
        self.mask_embedding = nn.Parameter(torch.empty(width))
        self.blocks = nn.ModuleList([Block(width, config.head_dim, config.mlp_ratio, None, causal=True)
                                     for _ in range(config.depth)])
        self.norm = nn.LayerNorm(width)
        for parameter in (self.network_embedding, self.start_token, self.mask_embedding):
            nn.init.trunc_normal_(parameter, std=0.02)
        self.apply(init_linear)

    # --- tokens ----------------------------------------------------------------------------------
    def patches(self, x: torch.Tensor) -> list[torch.Tensor]:
        """(B, C, T) -> per network (B, P, R * L): each patch's ROIs x samples, ROI-major."""
        length = self.config.patch_length
        patches = x.unfold(2, length, length)  # (B, C, P, L)
        out = []
        for n in range(self.config.n_networks):
            rois = patches.index_select(1, getattr(self, f"channels_{n}"))  # (B, R, P, L)
            out.append(rois.transpose(1, 2).flatten(2))
        return out

    def missing_networks(self, missing_channels: torch.Tensor) -> torch.Tensor:
        """(B, C) bool -> (B, N) bool: a network is missing when all its channels are."""
        return torch.stack([missing_channels.index_select(1, getattr(self, f"channels_{n}")).all(dim=1)
                            for n in range(self.config.n_networks)], dim=1)

    def positions(self) -> torch.Tensor:
        """(M, D) position of every token in the natural (network-major) order."""
        return (self.network_embedding[:, None, :] + self.patch_embedding[None, :, :]).flatten(0, 1)

    def contents(self, x: torch.Tensor, missing_channels: torch.Tensor | None = None) -> torch.Tensor:
        """(B, M, D) embedded tokens plus their positions, natural order; missing networks masked."""
        tokens = torch.stack([tokenizer(patches) for tokenizer, patches in zip(self.tokenizers, self.patches(x))],
                             dim=1)  # (B, N, P, D)
        if missing_channels is not None:
            hidden = self.missing_networks(missing_channels)[:, :, None, None]
            tokens = torch.where(hidden, self.mask_embedding.to(tokens.dtype), tokens)
        return tokens.flatten(1, 2) + self.positions()

    # --- sequences -------------------------------------------------------------------------------
    def training_sequence(self, x: torch.Tensor, missing_channels: torch.Tensor | None,
                          order: torch.Tensor) -> torch.Tensor:
        """(B, M, D) first-block input: [start, token order[0], ..., order[M-2]] + queries of order[0..M-1]."""
        contents = self.contents(x, missing_channels)  # (B, M, D)
        batch, _, width = contents.shape
        index = order[:, :, None].expand(-1, -1, width)
        ordered = contents.gather(1, index)
        queries = self.query(self.positions()).expand(batch, -1, -1).gather(1, index)
        start = self.start_token.to(contents.dtype).expand(batch, 1, width)
        return torch.cat([start, ordered[:, :-1]], dim=1) + queries

    def probing_sequence(self, x: torch.Tensor, missing_channels: torch.Tensor | None = None) -> torch.Tensor:
        """(B, M + 1, D) first-block input in the natural order: start, then every token; step k
        carries the query of token k (the last step none)."""
        contents = self.contents(x, missing_channels)
        batch, _, width = contents.shape
        queries = self.query(self.positions())
        queries = torch.cat([queries, queries.new_zeros(1, width)]).expand(batch, -1, -1)
        start = self.start_token.to(contents.dtype).expand(batch, 1, width)
        return torch.cat([start, contents], dim=1) + queries

    def step_outputs(self, x: torch.Tensor, missing_channels: torch.Tensor | None,
                     order: torch.Tensor) -> torch.Tensor:
        """(B, M, D) normalised outputs in step order: step k predicts token ``order[k]``."""
        sequence = self.training_sequence(x, missing_channels, order)
        for block in self.blocks:
            sequence = block(sequence)
        return self.norm(sequence)

    def predictions(self, x: torch.Tensor, missing_channels: torch.Tensor | None,
                    order: torch.Tensor) -> torch.Tensor:
        """(B, N, P, D): for every token, the normalised output of the step that predicts it."""
        out = self.step_outputs(x, missing_channels, order)
        rank = order.argsort(dim=1)  # natural token -> its step
        natural = out.gather(1, rank[:, :, None].expand(-1, -1, out.shape[-1]))
        return natural.view(out.shape[0], self.config.n_networks, self.config.n_patches, -1)

    # --- probing ---------------------------------------------------------------------------------
    def layer_outputs(self, x: torch.Tensor, missing_channels: torch.Tensor | None = None) -> list[torch.Tensor]:
        """Every block's (B, M, D) token outputs through the final LayerNorm, first block first."""
        sequence = self.probing_sequence(x, missing_channels)
        outputs = []
        for block in self.blocks:
            sequence = block(sequence)
            outputs.append(self.norm(sequence[:, 1:]))
        return outputs

    def forward(self, x: torch.Tensor, missing_channels: torch.Tensor | None = None) -> torch.Tensor:
        """(B, M, D) tokens of the last block (natural order, no CLS)."""
        return self.layer_outputs(x, missing_channels)[-1]


def code_loss(logits: torch.Tensor, codes: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy of (..., K) logits against (...) codes; codes -1 (missing networks) are left out."""
    total = F.cross_entropy(logits.flatten(0, -2).float(), codes.flatten(), ignore_index=-1, reduction="sum")
    return total / (codes >= 0).sum().clamp_min(1)


def patch_loss(predictions: list[torch.Tensor], targets: list[torch.Tensor], present: torch.Tensor) -> torch.Tensor:
    """Mean over present tokens of each token's mean squared error.

    predictions, targets : per network (B, P, R * L); present : (B, N) bool.
    """
    errors = torch.stack([(p.float() - t.float()).pow(2).mean(dim=-1) for p, t in zip(predictions, targets)],
                         dim=1)  # (B, N, P)
    weight = present[:, :, None].expand_as(errors).to(errors.dtype)
    return (errors * weight).sum() / weight.sum().clamp_min(1.0)


class ShuffledTraining(TrainingModel):
    """The encoder and one head per network: codebook logits (``target="codes"``) or patch values."""

    def __init__(self, config: ShuffledConfig, *, target: str = "codes", vocabulary: int = 64):
        super().__init__()
        if target not in ("codes", "continuous"):
            raise ArchitectureError(f"target must be 'codes' or 'continuous', received {target!r}")
        self.target = target
        self.encoder = ShuffledEncoder(config)  # the exported module
        outputs = [vocabulary if target == "codes" else len(channels) * config.patch_length
                   for channels in config.channels_of_network()]
        self.heads = nn.ModuleList([nn.Linear(config.width, size) for size in outputs])
        self.heads.apply(init_linear)

    def forward(self, x: torch.Tensor, missing: torch.Tensor, order: torch.Tensor,
                codes: torch.Tensor | None = None) -> dict:
        """x (B, C, T), missing (B, C) bool, order (B, M) long, codes (B, N, P) long (-1: no target)."""
        hidden = self.encoder.predictions(x, missing, order)  # (B, N, P, D)
        present = ~self.encoder.missing_networks(missing)  # (B, N)
        outputs = [head(hidden[:, n]) for n, head in enumerate(self.heads)]  # per network (B, P, out)
        if self.target == "codes":
            codes = codes.masked_fill(~present[:, :, None], -1)
            return {"total": code_loss(torch.stack(outputs, dim=1), codes)}
        return {"total": patch_loss(outputs, self.encoder.patches(x), present)}
