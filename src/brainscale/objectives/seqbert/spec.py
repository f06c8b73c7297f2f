"""Sequence-BERT as the config sees it: the transformer presets of the token-per-TR family, its
options (``tr``, ``mask_ratio``, ``is_next_weight``) and checks; Network-BERT reuses the checks.

Torch-free (see :mod:`brainscale.objectives.spec`).
"""

from __future__ import annotations

from ...errors import ConfigError
from ..sequence.config import (DERIVED, TRANSFORMER_PRESETS, TransformerConfig, check_sequence_run,
                               rounded_count, sequence_options)
from ..spec import ObjectiveSpec

__all__ = ["MIN_PAIR_CROP", "OPTIONS", "SPEC", "check", "check_pairs", "check_ratio", "mask_count"]

#: The shortest crop for is-next: two halves of at least 2 TRs.
MIN_PAIR_CROP = 4

#: The options of both BERT-style objectives but the masks'.
PAIR_OPTIONS = {
    "is_next_weight": {"description": "Weight of the is-next loss (total = reconstruction + is_next_weight x is_next).",
                       "type": "number", "minimum": 0, "default": 1.0},
}

OPTIONS = sequence_options(
    mask_ratio={"description": "Share of a crop's TRs replaced by the mask token and reconstructed, "
                               "round(mask_ratio x crop_length) per crop (the paper's 0.2).",
                "type": "number", "exclusiveMinimum": 0, "exclusiveMaximum": 1, "default": 0.2},
    **PAIR_OPTIONS)


def check_ratio(name: str, ratio, total: int, unit: str, fix: str) -> int:
    """The masked count ``round(ratio * total)``; ConfigError where it leaves nothing to predict or from."""
    key = f"pretrain.options.{name}.mask_ratio"
    if isinstance(ratio, bool) or not isinstance(ratio, (int, float)) or not 0 < ratio < 1:
        raise ConfigError(f"{key} must lie strictly between 0 and 1, received {ratio!r}.")
    count = rounded_count(ratio, total)
    if count < 1:
        raise ConfigError(f"{key} {ratio} masks round({ratio} x {total}) = 0 of the {total} {unit}: nothing to "
                          f"predict; raise it or {fix}.")
    if count >= total:
        raise ConfigError(f"{key} {ratio} masks all {total} {unit}: nothing left to predict from; lower it.")
    return count


def mask_count(name: str, config: TransformerConfig, options) -> int:
    """The masked TRs of a crop of ``config``."""
    return check_ratio(name, options["mask_ratio"], config.crop_length, "TRs of a crop",
                       "lengthen pretrain.architecture.crop_length")


def check_pairs(name: str, config: TransformerConfig, options, count=mask_count) -> int:
    """The crop holds two halves, ``is_next_weight`` and the masks (``count(name, config, options)``)
    work; returns the masked count."""
    if config.crop_length < MIN_PAIR_CROP:
        raise ConfigError(f"pretrain.architecture.crop_length {config.crop_length} is too short for {name}: "
                          f"is-next needs two halves of at least 2 TRs, a crop of at least {MIN_PAIR_CROP} "
                          f"(the {name} presets use 48).")
    weight = options["is_next_weight"]
    if isinstance(weight, bool) or not isinstance(weight, (int, float)) or weight < 0:
        raise ConfigError(f"pretrain.options.{name}.is_next_weight must be a number >= 0, received {weight!r}.")
    return count(name, config, options)


def check(run) -> None:
    """The family's checks, the is-next crop and weight, the masked count."""
    check_pairs(run.objective, check_sequence_run(run, TransformerConfig), run.options)


SPEC = ObjectiveSpec(name="seqbert", presets=TRANSFORMER_PRESETS, options=OPTIONS,
                     loss_terms=("reconstruction", "is_next"), training_defaults={"base_lr": 0.032},
                     config=TransformerConfig, derived=DERIVED, check=check,
                     entry="objective:SequenceBERT")
