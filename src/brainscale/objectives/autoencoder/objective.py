"""The bidirectional-LSTM autoencoder of learning-from-brains (Thomas et al., NeurIPS 2022).

The crop's TR tokens (as in :mod:`brainscale.objectives.csm`: ``Linear(457 -> D)`` + LayerNorm,
missing channels zeroed and flagged, time since the crop start in 0.2 s bins) go through stacked
bidirectional LSTMs (:class:`~brainscale.objectives.sequence.model.LSTMEncoder`, D/2 per direction, residual
between layers). The *pooled state* is the mean over time of the last layer's outputs through the
final LayerNorm; an LSTM decoder (:class:`~brainscale.objectives.sequence.model.LSTMDecoder`) reads it,
plus its own time embedding, at every TR and reconstructs the whole crop through
``Linear(D -> 457)``: L1 in input space over the channels the run has. The decoder never sees
the data, so everything it reconstructs passes through the pooled state.

Differences from the reference code: it pools the final hidden states of the last LSTM
(averaged over the two directions) through ``Linear + tanh``, and its decoder is fed its own
previous outputs or, half of the time, the true previous TR (teacher forcing 0.5, drawn
outside any seed); here the pooling is the mean over time (which every layer also has, for
the probes) and there is no teacher forcing (deterministic, and the bottleneck stays the only
path).

Probing features (``has_cls = True``): per LSTM layer, token 0 is the pooled state of that
layer (``cls``), the other tokens are the T outputs (``mean``).

Sizes (``autoencoder-<size>``; ``width`` counts both directions; options and checks in :mod:`.spec`):

==========  =====  =====  =============  ====
size        width  depth  decoder_depth  crop
==========  =====  =====  =============  ====
``tiny``    64     2      2              48
``small``   256    2      2              48
``base``    768    4      4              48   (the reference's 4 + 4 layers, 768 wide)
==========  =====  =====  =============  ====

The paper's recipe (reference ``scripts/train.py`` defaults: AdamW 1e-4 at batch 64, weight
decay 0.1, 1 % warmup, linear decay, clip 1.0, dropout 0.1; 300k steps), as near as this
loop's cosine schedule comes::

    pretrain:
      objectives: [autoencoder-base]
      batch_size: 64
      budget: {unit: steps, total: 300000, warmup: 3000, checkpoint_every: 10000}
      options:
        autoencoder: {base_lr: 0.0004, weight_decay: [0.1, 0.1], grad_clip: 1.0}
"""

from __future__ import annotations

import torch

from ..base import TrainingModel
from ..sequence.model import LSTMConfig, LSTMDecoder, LSTMEncoder, masked_l1
from ..sequence.objective import SequenceObjective
from .spec import LSTM_PRESETS, SPEC

__all__ = ["LSTM_PRESETS", "AutoencoderTraining", "LSTMAutoencoder"]


class AutoencoderTraining(TrainingModel):
    """The LSTM encoder (exported) and the decoder that reconstructs a crop from its pooled state."""

    def __init__(self, config: LSTMConfig):
        super().__init__()
        self.lstm = LSTMEncoder(config)
        self.decoder = LSTMDecoder(config)

    @property
    def encoder(self) -> LSTMEncoder:
        return self.lstm

    def reconstruction(self, x: torch.Tensor, missing: torch.Tensor | None = None) -> torch.Tensor:
        """(B, C, T) reconstruction of (B, C, T) crops."""
        pooled = self.lstm.norm(self.lstm.pooled(self.lstm.states(x, missing)[-1]))  # (B, D)
        return self.decoder(pooled, x.shape[-1])

    def forward(self, x: torch.Tensor, missing: torch.Tensor, **options) -> dict:
        return {"total": masked_l1(self.reconstruction(x, missing), x, ~missing[:, :, None])}


class LSTMAutoencoder(SequenceObjective):
    spec = SPEC
    config_class, encoder_class = LSTMConfig, LSTMEncoder

    def build(self) -> AutoencoderTraining:
        return AutoencoderTraining(self.config())
