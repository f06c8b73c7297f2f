"""The token-per-TR family as the config sees it: the encoder configs, the transformer presets, the
TR and the shared option and config-time check of every member's spec.

Torch-free (see :mod:`brainscale.objectives.spec`). What the members share:

- the TR of the time embedding: the shards' own, ``preprocess.target_tr`` as recorded in their
  ``manifest.json`` by the ``build_shards`` rule; shards without that record (written outside
  the workflow) use the option ``tr`` (default null: :data:`DEFAULT_TR`, the pipeline's target
  TR). A ``tr`` that contradicts the shards' record is refused when the run starts;
- the crop length: a fixed number of TRs so that items collate (the paper draws sequences of
  U[10, 50) TRs; every preset uses 48 TRs, 96 s at 2 s);
- architecture overrides: any field of the member's config but ``tr`` and ``network_map`` (they
  come from the data and the options); ``patch_length`` and ``token_width`` do not apply (one
  token per TR).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields

from ...errors import ArchitectureError, ConfigError
from ...models.config import EncoderConfig, reference_network_map

__all__ = ["SequenceConfig", "TransformerConfig", "LSTMConfig", "DEFAULT_TR", "TRANSFORMER_PRESETS",
           "rounded_count", "DERIVED", "architecture_keys", "sequence_options", "sequence_config", "check_sequence_run"]

#: The pipeline's target TR (s), for shards that do not record theirs.
DEFAULT_TR = 2.0

#: The sizes of the GPT- and BERT-style objectives; ``base`` is the paper's (4 layers, 12 heads, 768).
TRANSFORMER_PRESETS = {
    "tiny": dict(width=64, depth=2, head_dim=32, crop_length=48),
    "small": dict(width=256, depth=4, head_dim=64, crop_length=48),
    "base": dict(width=768, depth=4, head_dim=64, crop_length=48),
}

#: Config fields that are not architecture overrides (they come from the data and the options).
DERIVED = ("tr", "network_map")


@dataclass
class SequenceConfig(EncoderConfig):
    """What every token-per-TR model shares (saved with every checkpoint and export)."""

    width: int = 768  # D
    depth: int = 4
    crop_length: int = 48  # TRs per crop (the paper: sequences of U[10, 50) TRs)
    tr: float = 2.0  # seconds between the crop's time points
    time_bin: float = 0.2  # seconds per bin of the time embedding
    max_time: float = 300.0  # the last bin of the time embedding (later times share it)
    network_map: list = field(default_factory=reference_network_map)  # (channels,) network of each channel

    def __post_init__(self):
        for name in ("width", "depth", "crop_length"):
            if int(getattr(self, name)) < 1:
                raise ArchitectureError(f"{name} ({getattr(self, name)}) must be at least 1.")
        if self.crop_length < 2:
            raise ArchitectureError(f"crop_length ({self.crop_length}) must be at least 2 TRs.")
        if self.tr <= 0 or self.time_bin <= 0:
            raise ArchitectureError(f"tr ({self.tr}) and time_bin ({self.time_bin}) must be positive seconds.")
        if (self.crop_length - 1) * self.tr > self.max_time + 1e-9:
            raise ArchitectureError(
                f"crop_length ({self.crop_length}) x tr ({self.tr} s) exceeds the {self.max_time:g} s the time "
                f"embedding covers: use at most {int(self.max_time // self.tr) + 1} TRs.")

    @property
    def n_time_bins(self) -> int:
        return int(math.floor(self.max_time / self.time_bin + 0.5)) + 1


@dataclass
class TransformerConfig(SequenceConfig):
    """A GPT- or BERT-style encoder; the defaults are the paper's (4 layers, 12 heads, 768)."""

    head_dim: int = 64
    mlp_ratio: float = 4.0
    layerscale_init: float = 1.0

    def __post_init__(self):
        super().__post_init__()
        self.check_heads(even=False)


@dataclass
class LSTMConfig(SequenceConfig):
    """The bidirectional-LSTM autoencoder (``width`` = both directions together)."""

    decoder_depth: int = 1

    def __post_init__(self):
        super().__post_init__()
        if self.width % 2:
            raise ArchitectureError(f"width ({self.width}) must be even: half of it per LSTM direction.")
        if self.decoder_depth < 1:
            raise ArchitectureError(f"decoder_depth ({self.decoder_depth}) must be at least 1.")


def rounded_count(ratio: float, total: int) -> int:
    """``ratio * total`` rounded half up (0.5 -> 1), the number of masked elements."""
    return int(math.floor(ratio * total + 0.5))


def architecture_keys(config_class: type) -> tuple[str, ...]:
    """The fields of ``config_class`` a run may override (all but ``tr`` and ``network_map``)."""
    return tuple(f.name for f in fields(config_class) if f.name not in DERIVED)


def sequence_options(**own) -> dict:
    """The option schemas of a member: the family's ``tr`` and the member's ``own``."""
    return {
        "tr": {"description": "TR (s) of shards that do not record theirs (preprocess.target_tr in their "
                              f"manifest.json); null: {DEFAULT_TR}. Refused where it contradicts the shards' record.",
               "type": ["number", "null"], "exclusiveMinimum": 0, "default": None},
        **own,
    }


def sequence_config(run, config_class: type, *, tr: float, network_map: list[int]):
    """The encoder config of a run's architecture (a :class:`~brainscale.objectives.RunSpec`'s) at TR
    ``tr`` on the channels of ``network_map``; ConfigError naming the key where it cannot work."""
    allowed = sorted(architecture_keys(config_class))
    foreign = sorted(set(run.architecture) - set(allowed))
    if foreign:
        raise ConfigError(f"pretrain.architecture.{foreign[0]} does not apply to {run.objective} (one token per TR): "
                          f"set it to null; {run.objective} takes {allowed}.")
    try:
        return config_class(**{**run.architecture, "tr": tr, "network_map": network_map})
    except (ArchitectureError, TypeError) as error:
        raise ConfigError(f"pretrain.architecture for {run.run}: {error}") from None


def check_sequence_run(run, config_class: type):
    """The family's config-time check of a run (the option ``tr``, the architecture keys, the config
    builds on the reference channels); returns that config for the member's own checks."""
    tr = run.options.get("tr")
    if tr is not None and (isinstance(tr, bool) or not isinstance(tr, (int, float)) or tr <= 0):
        raise ConfigError(f"pretrain.options.{run.objective}.tr must be a TR in seconds (> 0) or null (the "
                          f"shards' TR, else {DEFAULT_TR}), received {tr!r}.")
    return sequence_config(run, config_class, tr=DEFAULT_TR if tr is None else float(tr),
                           network_map=reference_network_map())
