"""What the token-per-TR objectives share (learning-from-brains: CSM, Seq-BERT, Network-BERT,
autoencoder): the TR of the crops, the presets of the GPT- and BERT-style models, the
architecture overrides and their checks; the crops come from :class:`~.base.CropItems`.

:class:`SequenceObjective` has no ``name``: it is not a run of its own. Each objective module
(``csm``, ``seqbert``, ``netbert``, ``autoencoder``) subclasses it. What they share:

- the TR of the time embedding: the shards' own, ``preprocess.target_tr`` as recorded in their
  ``manifest.json`` by the ``build_shards`` rule; shards without that record (written outside
  the workflow) use the option ``tr`` (default null: 2.0 s, the pipeline's target TR). A ``tr``
  that contradicts the shards' record is refused;
- the crop length: a fixed number of TRs so that items collate (the paper draws sequences of
  U[10, 50) TRs; every preset uses 48 TRs, 96 s at 2 s);
- ``pretrain.architecture`` overrides: ``crop_length``, ``depth``, ``width`` and, for the
  transformers, ``head_dim``; ``patch_length`` and ``token_width`` do not apply (one token per TR).
"""

from __future__ import annotations

import json
import math
from dataclasses import fields
from functools import cached_property
from pathlib import Path
from typing import ClassVar

from ..models.semantoks import reference_network_map
from ..models.sequence import ConfigurationError, TransformerConfig
from ..shards.writer import MANIFEST
from ..training.errors import TrainingError
from .base import CropItems, Objective, architecture_overrides

__all__ = ["DEFAULT_TR", "TRANSFORMER_PRESETS", "SequenceObjective", "recorded_tr", "rounded_count"]

#: The pipeline's target TR (s), for shards that do not record theirs.
DEFAULT_TR = 2.0

#: The sizes of the GPT- and BERT-style objectives; ``base`` is the paper's (4 layers, 12 heads, 768).
TRANSFORMER_PRESETS = {
    "tiny": dict(width=64, depth=2, head_dim=32, crop_length=48),
    "small": dict(width=256, depth=4, head_dim=64, crop_length=48),
    "base": dict(width=768, depth=4, head_dim=64, crop_length=48),
}

#: Config fields that are not architecture overrides (they come from the data and the options).
_DERIVED = ("tr", "network_map")


def recorded_tr(shard_folder: str | Path) -> float | None:
    """The ``preprocess.target_tr`` the shards' manifest records, None where it records none."""
    manifest = json.loads((Path(shard_folder) / MANIFEST).read_text())
    value = ((manifest.get("config") or {}).get("preprocess") or {}).get("target_tr")
    return None if value is None else float(value)


def rounded_count(ratio: float, total: int) -> int:
    """``ratio * total`` rounded half up (0.5 -> 1), the number of masked elements."""
    return int(math.floor(ratio * total + 0.5))


class SequenceObjective(Objective):
    """The shared part of the token-per-TR objectives (module docstring); no ``name``, not a run."""

    presets = TRANSFORMER_PRESETS
    config_class: ClassVar[type] = TransformerConfig

    # --- configuration -------------------------------------------------------------------------
    @classmethod
    def check(cls, settings: dict) -> None:
        super().check(settings)
        options = cls.options_of(settings)
        tr = options.get("tr")
        if tr is not None and (isinstance(tr, bool) or not isinstance(tr, (int, float)) or tr <= 0):
            raise TrainingError(f"pretrain.options.{cls.name}.tr must be a TR in seconds (> 0) or null (the "
                                f"shards' TR, else {DEFAULT_TR}), received {tr!r}.")
        config = cls.make_config(settings, tr=DEFAULT_TR if tr is None else float(tr),
                                 network_map=reference_network_map())
        cls.check_sequence(config, options)

    @classmethod
    def check_sequence(cls, config, options: dict) -> None:
        """The objective's own checks of its options against the architecture (raise TrainingError)."""

    @classmethod
    def make_config(cls, settings: dict, *, tr: float, network_map: list[int]):
        """The encoder config of the run's size with the ``pretrain.architecture`` overrides."""
        allowed = sorted(f.name for f in fields(cls.config_class) if f.name not in _DERIVED)
        overrides = architecture_overrides(settings)
        foreign = sorted(set(overrides) - set(allowed))
        if foreign:
            raise TrainingError(f"pretrain.architecture.{foreign[0]} does not apply to {cls.name} (one token per TR): "
                                f"set it to null; {cls.name} takes {allowed}.")
        try:
            return cls.config_class(**{**cls.presets[settings["model"]], **overrides, "tr": tr,
                                       "network_map": network_map})
        except (ConfigurationError, TypeError) as error:
            raise TrainingError(f"pretrain.architecture for {cls.name}-{settings['model']}: {error}") from None

    @cached_property
    def tr(self) -> float:
        """The TR (s) of the crops: the shards' record, else the option ``tr``, else 2.0."""
        recorded, chosen = recorded_tr(self.data.shard_folder), self.options.get("tr")
        if chosen is None:
            return DEFAULT_TR if recorded is None else recorded
        if recorded is not None and not math.isclose(recorded, float(chosen), rel_tol=1e-6):
            raise TrainingError(f"pretrain.options.{self.name}.tr is {chosen} s, but the shards in "
                                f"{self.data.shard_folder} were resampled to preprocess.target_tr = {recorded} s: "
                                "remove the option (the shards' TR is used).")
        return float(chosen)

    def config(self):
        return self.make_config(self.settings, tr=self.tr, network_map=self.data.network_map)

    def dataset(self) -> CropItems:
        return CropItems(self.data.crops(self.config().crop_length, preload=self.settings["preload"]),
                         seed=self.data.seed)
