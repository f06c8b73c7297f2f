"""Causal sequence modelling (CSM) of learning-from-brains (Thomas et al., NeurIPS 2022).

A GPT-style decoder (:class:`~brainscale.objectives.sequence.model.CausalEncoder`) reads one token per
TR of a crop (``Linear(457 -> D)`` + LayerNorm, missing channels zeroed and flagged, a learned
embedding of the time since the crop start in 0.2 s bins, see :mod:`brainscale.objectives.sequence.model`)
and predicts every next TR: the output at t, which sees TRs <= t only, goes through
``Linear(D -> 457)`` and is compared with TR t + 1, L1 in input space over the channels the run
has. The reference code masks *one* random TR i >= 1 of each sequence, cuts the sequence after
it and predicts it from the mask token's output; under a causal mask, predicting the next TR
from every position is the same task with T - 1 targets per crop instead of one (our reading
of "predict a masked next TR"). The exported encoder is the decoder (no CLS: the probes take
the token mean of every layer).

The shared part of the four token-per-TR objectives (TR, crop length, overrides) is in
:mod:`brainscale.objectives.sequence`; the options and checks in :mod:`.spec`.

Sizes (``csm-<size>``; Seq-BERT and Network-BERT use the same three):

==========  =====  =====  ========  =====  ====
size        width  depth  head_dim  heads  crop
==========  =====  =====  ========  =====  ====
``tiny``    64     2      32        2      48
``small``   256    4      64        4      48
``base``    768    4      64        12     48   (the paper's GPT/BERT)
==========  =====  =====  ========  =====  ====

The paper's recipe (peer-models notes and the reference ``scripts/train.py`` defaults): AdamW,
learning rate 1e-4 at batch 64, weight decay 0.1, 1 % warmup then linear decay, gradient clip
1.0, dropout 0.1, 300k steps on ~12k runs. With this loop's cosine schedule and no dropout,
the nearest settings are::

    pretrain:
      objectives: [csm-base]
      batch_size: 64
      budget: {unit: steps, total: 300000, warmup: 3000, checkpoint_every: 10000}
      options:
        csm: {base_lr: 0.0004, weight_decay: [0.1, 0.1], grad_clip: 1.0}

The default ``base_lr`` (0.032 per 256 samples: 1e-3 at the demo's batch of 8) trains the
``tiny`` model in the demo's few hundred steps.
"""

from __future__ import annotations

import torch
from torch import nn

from ..base import TrainingModel
from ..sequence.model import CausalEncoder, TransformerConfig, masked_l1
from ..sequence.objective import TRANSFORMER_PRESETS, SequenceObjective
from .spec import SPEC

__all__ = ["CausalSequenceTraining", "CausalSequenceModelling", "TRANSFORMER_PRESETS"]


class CausalSequenceTraining(TrainingModel):
    """The GPT-style decoder and its ``Linear(D -> C)`` next-TR head."""

    def __init__(self, config: TransformerConfig):
        super().__init__()
        self.gpt = CausalEncoder(config)
        self.head = nn.Linear(config.width, config.n_channels)

    @property
    def encoder(self) -> CausalEncoder:
        return self.gpt

    def predictions(self, x: torch.Tensor, missing: torch.Tensor | None = None) -> torch.Tensor:
        """(B, C, T): column t is the prediction of TR t + 1 from TRs <= t."""
        return self.head(self.gpt(x, missing_channels=missing)).transpose(1, 2)

    def forward(self, x: torch.Tensor, missing: torch.Tensor, **options) -> dict:
        # x (B, C, T), missing (B, C)
        prediction = self.predictions(x, missing)[:, :, :-1]
        return {"total": masked_l1(prediction, x[:, :, 1:], ~missing[:, :, None])}


class CausalSequenceModelling(SequenceObjective):
    spec = SPEC
    config_class, encoder_class = TransformerConfig, CausalEncoder

    def build(self) -> CausalSequenceTraining:
        return CausalSequenceTraining(self.config())
