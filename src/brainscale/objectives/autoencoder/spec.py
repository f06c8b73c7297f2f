"""The LSTM autoencoder as the config sees it: its sizes, the option ``tr`` and the checks of the
token-per-TR family (:mod:`brainscale.objectives.sequence.config`).

Torch-free (see :mod:`brainscale.objectives.spec`).
"""

from __future__ import annotations

from ..sequence.config import DERIVED, LSTMConfig, check_sequence_run, sequence_options
from ..spec import ObjectiveSpec

__all__ = ["LSTM_PRESETS", "OPTIONS", "SPEC", "check"]

#: Sizes (``width`` counts both directions); ``base`` is the reference's 4 + 4 layers, 768 wide.
LSTM_PRESETS = {
    "tiny": dict(width=64, depth=2, decoder_depth=2, crop_length=48),
    "small": dict(width=256, depth=2, decoder_depth=2, crop_length=48),
    "base": dict(width=768, depth=4, decoder_depth=4, crop_length=48),
}

OPTIONS = sequence_options()


def check(run) -> None:
    """The option ``tr``, the architecture keys and the LSTM config builds."""
    check_sequence_run(run, LSTMConfig)


SPEC = ObjectiveSpec(name="autoencoder", presets=LSTM_PRESETS, options=OPTIONS, training_defaults={"base_lr": 0.064},
                     config=LSTMConfig, derived=DERIVED, check=check, entry="objective:LSTMAutoencoder")
