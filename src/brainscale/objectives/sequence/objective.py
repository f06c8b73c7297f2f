"""The training side that the token-per-TR objectives share (learning-from-brains: CSM, Seq-BERT,
Network-BERT, autoencoder): the TR of the crops and the encoder config of a run; the crops come
from :class:`~brainscale.objectives.base.CropItems`.

:class:`SequenceObjective` has no ``spec``: it is not a run of its own. Each member package
(``csm``, ``seqbert``, ``netbert``, ``autoencoder``) subclasses it; the presets, the option ``tr``
and the config-time checks they share are in :mod:`.config`.
"""

from __future__ import annotations

import json
import math
from functools import cached_property
from pathlib import Path
from typing import ClassVar

from ...errors import TrainingError
from ...shards.writer import MANIFEST
from ..base import CropItems, Objective
from .config import DEFAULT_TR, TRANSFORMER_PRESETS, TransformerConfig, rounded_count, sequence_config

__all__ = ["DEFAULT_TR", "TRANSFORMER_PRESETS", "SequenceObjective", "recorded_tr", "rounded_count"]


def recorded_tr(shard_folder: str | Path) -> float | None:
    """The ``preprocess.target_tr`` the shards' manifest records, None where it records none."""
    manifest = json.loads((Path(shard_folder) / MANIFEST).read_text())
    value = ((manifest.get("config") or {}).get("preprocess") or {}).get("target_tr")
    return None if value is None else float(value)


class SequenceObjective(Objective):
    """The shared part of the token-per-TR objectives (module docstring); no ``spec``, not a run."""

    config_class: ClassVar[type] = TransformerConfig

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
        """The encoder config of the run's architecture at the shards' TR, on the shards' channels."""
        return sequence_config(self.run, self.config_class, tr=self.tr, network_map=self.data.network_map)

    def dataset(self) -> CropItems:
        return CropItems(self.data.crops(self.config().crop_length, preload=self.settings["preload"]),
                         seed=self.data.seed)
