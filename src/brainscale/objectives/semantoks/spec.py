"""Brain-Semantoks as the config sees it: the encoder config, its sizes and the objective's options.

Torch-free (see :mod:`brainscale.objectives.spec`). The options, under ``pretrain.options.semantoks``,
were top-level ``pretrain`` keys (and ``budget.network_decay``) before objectives had folders.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ...errors import ArchitectureError, ConfigError
from ...models.config import EncoderConfig, reference_network_map
from ..spec import ObjectiveSpec

__all__ = ["SemantoksConfig", "MODEL_SIZES", "SPEC", "model_config"]


@dataclass
class SemantoksConfig(EncoderConfig):
    """Architecture of the encoder (saved with every checkpoint and export)."""

    width: int = 768  # D, the token and transformer width
    depth: int = 8
    head_dim: int = 64
    mlp_ratio: float = 4.0
    layerscale_init: float = 0.1
    crop_length: int = 100
    patch_length: int = 20
    network_map: list = field(default_factory=reference_network_map)  # (channels,) network index per channel
    token_width: int | None = None  # must equal width; kept to reject configs that say otherwise
    long_conv_kernel: int = 4
    long_conv_scales: int = 3
    long_conv_multiplier: float = 2.0
    head_hidden: int = 1024
    head_output: int = 128

    def __post_init__(self):
        self.check_token_width()
        self.check_heads()
        self.check_patches("20 of 100")
        self.check_network_map()


#: Named sizes; ``base`` is the released model (about 58.7M encoder parameters).
MODEL_SIZES = {
    "base": dict(width=768, depth=8, head_dim=64),
    "small": dict(width=256, depth=4, head_dim=64, head_hidden=512),
    "tiny": dict(width=64, depth=2, head_dim=32, head_hidden=128, head_output=32),
}

OPTIONS = {
    "mask_probability": {"description": "Probability that a step uses the masked-token loss.", "type": "number",
                         "minimum": 0, "maximum": 1, "default": 0.5},
    "mask_weight": {"description": "Weight of the masked-token loss.", "type": "number", "minimum": 0,
                    "default": 0.5},
    "network_weight": {"description": "Initial weight of the network loss.", "type": "number", "minimum": 0,
                       "default": 0.5},
    "network_decay": {"description": "The network loss's weight decays to 0 over this length, in the unit of "
                                     "pretrain.budget.", "type": "integer", "minimum": 1, "default": 960},
    "eps": {"description": "Distortion eps of the coding rate.", "type": "number", "exclusiveMinimum": 0,
            "default": 0.05},
    "views": {
        "description": "How the two views of a training item are drawn.",
        "type": "object", "additionalProperties": False,
        "properties": {
            "mode": {"description": "independent: two random crops of one run (the reference; they may overlap); "
                                    "distant: crops of one run whose starts are at least min_gap apart (capped by the "
                                    "run's length); cross_run: two different runs where the subject has several, "
                                    "else distant.", "enum": ["independent", "distant", "cross_run"]},
            "min_gap": {"description": "Least distance in TRs between the starts of distant views; null: the crop "
                                       "length (no overlap where the run allows).", "type": ["integer", "null"],
                        "minimum": 0}},
        "default": {"mode": "distant", "min_gap": None}},
}


def model_config(architecture, network_map: list[int]) -> SemantoksConfig:
    """The encoder config of a run's architecture (a :class:`~brainscale.objectives.RunSpec`'s) on the
    shards' channels."""
    return SemantoksConfig(**{**architecture, "network_map": network_map})


def check(run) -> None:
    """The architecture builds (token width, heads, patches)."""
    try:
        SemantoksConfig(**run.architecture)
    except (ArchitectureError, TypeError) as error:
        raise ConfigError(f"pretrain.architecture for {run.run}: {error}") from None


SPEC = ObjectiveSpec(name="semantoks", presets=MODEL_SIZES, options=OPTIONS, loss_terms=("cls", "network", "mask"),
                     config=SemantoksConfig, check=check, entry="objective:BrainSemantoks")
