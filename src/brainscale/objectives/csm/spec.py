"""Causal sequence modelling (CSM) as the config sees it: the transformer presets of the token-per-TR
family, the option ``tr`` and the family's checks (:mod:`brainscale.objectives.sequence.config`).

Torch-free (see :mod:`brainscale.objectives.spec`).
"""

from __future__ import annotations

from ..sequence.config import (DERIVED, TRANSFORMER_PRESETS, TransformerConfig, check_sequence_run,
                               sequence_options)
from ..spec import ObjectiveSpec

__all__ = ["OPTIONS", "SPEC", "check"]

OPTIONS = sequence_options()


def check(run) -> None:
    """The option ``tr``, the architecture keys and the transformer config builds."""
    check_sequence_run(run, TransformerConfig)


SPEC = ObjectiveSpec(name="csm", presets=TRANSFORMER_PRESETS, options=OPTIONS, training_defaults={"base_lr": 0.032},
                     config=TransformerConfig, derived=DERIVED, check=check,
                     entry="objective:CausalSequenceModelling")
