"""Network-BERT as the config sees it: Seq-BERT's presets and checks (:mod:`brainscale.objectives.seqbert.spec`)
with a mask of channels or networks (options ``mask_ratio``, ``unit``).

Torch-free (see :mod:`brainscale.objectives.spec`).
"""

from __future__ import annotations

from ...errors import ConfigError
from ..seqbert.spec import PAIR_OPTIONS, check_pairs, check_ratio
from ..sequence.config import (DERIVED, TRANSFORMER_PRESETS, TransformerConfig, check_sequence_run,
                               sequence_options)
from ..spec import ObjectiveSpec

__all__ = ["UNITS", "OPTIONS", "SPEC", "check", "mask_count"]

#: What a mask hides: input channels (the paper's input dimensions) or whole pipeline networks.
UNITS = ("channels", "networks")

OPTIONS = sequence_options(
    mask_ratio={"description": "Share of the units hidden at every TR and reconstructed, round(mask_ratio x units) "
                               "per crop (the paper's 0.1: 46 of 457 channels).",
                "type": "number", "exclusiveMinimum": 0, "exclusiveMaximum": 1, "default": 0.1},
    unit={"description": "channels: mask input channels (the paper's); networks: mask whole networks of the "
                         "network map (7 cortical, subcortex, cerebellum).", "enum": list(UNITS),
          "default": "channels"},
    **PAIR_OPTIONS)


def mask_count(name: str, config: TransformerConfig, options) -> int:
    """The masked channels or networks of a crop of ``config``."""
    unit = options["unit"]
    if unit not in UNITS:
        raise ConfigError(f"pretrain.options.{name}.unit must be one of {list(UNITS)}, received {unit!r}.")
    total = config.n_channels if unit == "channels" else config.n_networks
    fix = "use unit: channels" if unit == "networks" else "mask more channels"
    return check_ratio(name, options["mask_ratio"], total, unit, fix)


def check(run) -> None:
    """The family's checks, the is-next crop and weight, the masked count on the reference channels."""
    check_pairs(run.objective, check_sequence_run(run, TransformerConfig), run.options, mask_count)


SPEC = ObjectiveSpec(name="netbert", presets=TRANSFORMER_PRESETS, options=OPTIONS,
                     loss_terms=("reconstruction", "is_next"), training_defaults={"base_lr": 0.032},
                     config=TransformerConfig, derived=DERIVED, check=check,
                     entry="objective:NetworkBERT")
