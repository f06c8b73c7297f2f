"""The BrainLM-style MAE as the config sees it: the model config, its sizes and the mask ratio.

Torch-free (see :mod:`brainscale.objectives.spec`); the objective is described in :mod:`.objective`.
The option, under ``pretrain.options.mae``, is ``mask_ratio``; the objective sets its own
``base_lr`` and ``weight_decay`` (``training_defaults``, BrainLM's).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ...errors import ArchitectureError, ConfigError
from ...models.config import REFERENCE_CHANNELS, EncoderConfig, reference_network_map
from ..spec import ObjectiveSpec

__all__ = ["MAEConfig", "MAE_SIZES", "OPTIONS", "model_config", "mask_counts", "check", "SPEC"]

@dataclass
class MAEConfig(EncoderConfig):
    """Architecture of the MAE (saved with every checkpoint and export)."""

    crop_length: int = 200  # T, TRs per crop
    patch_length: int = 20  # L, TRs per patch token
    width: int = 768  # D, the encoder's token width
    depth: int = 12
    head_dim: int = 64
    mlp_ratio: float = 4.0
    layerscale_init: float = 1.0  # 1: a plain pre-LN block at initialisation (ViT-MAE has no LayerScale)
    decoder_width: int = 512
    decoder_depth: int = 8
    decoder_head_dim: int = 32
    network_map: list = field(default_factory=reference_network_map)  # (channels,) network index per channel

    def __post_init__(self):
        self.check_patches("20 of 200")
        self.check_heads()
        self.check_heads("decoder_")


#: Named sizes. ``base`` is BrainLM's 111M ViT-B-like model (110.7M parameters, 85.1M in the
#: encoder; see :mod:`.objective`). ``tiny`` and ``small`` are sized for the CPU demo
#: (457 x 2 and 457 x 3 tokens): a training step of 8 crops takes about 0.12 s and 0.27 s on one
#: CPU thread, embedding all tokens about 7 ms and 25 ms per crop.
MAE_SIZES = {
    "base": dict(crop_length=200, patch_length=20, width=768, depth=12, head_dim=64, decoder_width=512,
                 decoder_depth=8, decoder_head_dim=32),
    "small": dict(crop_length=60, patch_length=20, width=64, depth=2, head_dim=32, mlp_ratio=2.0,
                  decoder_width=32, decoder_depth=1, decoder_head_dim=16),
    "tiny": dict(crop_length=40, patch_length=20, width=32, depth=2, head_dim=16, mlp_ratio=2.0,
                 decoder_width=32, decoder_depth=1, decoder_head_dim=16),
}

OPTIONS = {
    "mask_ratio": {"description": "Fraction of each crop's tokens that are masked (and predicted); BrainLM uses "
                                  "0.75, or 0.2-0.9.", "type": "number", "exclusiveMinimum": 0,
                   "exclusiveMaximum": 1, "default": 0.75},
}

#: The training keys of an mae run (BrainLM's recipe, see :mod:`.objective`).
TRAINING_DEFAULTS = {"base_lr": 1.0e-3, "weight_decay": [0.05, 0.05]}


def mask_counts(n_tokens: int, mask_ratio: float) -> tuple[int, int]:
    """(visible, masked) token counts of a sample: ``masked = round(mask_ratio * n_tokens)``.

    Raises
    ------
    ValueError
        A ratio outside (0, 1), or one that leaves no visible or no masked token.
    """
    if not 0 < mask_ratio < 1:
        raise ValueError(f"mask_ratio must lie strictly between 0 and 1, received {mask_ratio}")
    masked = int(round(mask_ratio * n_tokens))
    if masked < 1 or masked > n_tokens - 1:
        raise ValueError(f"mask_ratio {mask_ratio} of {n_tokens} tokens leaves {n_tokens - masked} visible and "
                         f"{masked} masked: both need at least one")
    return n_tokens - masked, masked


def model_config(architecture, run: str, network_map: list[int] | None = None) -> MAEConfig:
    """The :class:`MAEConfig` of run ``run``'s architecture (a :class:`~brainscale.objectives.RunSpec`'s:
    the preset with the overrides), on the shards' channels where ``network_map`` is given.

    ``token_width`` (a ``pretrain.architecture`` key of every objective) must equal the width."""
    architecture = dict(architecture)
    token_width = architecture.pop("token_width", None)
    width = architecture.get("width", MAEConfig.width)
    if token_width is not None and token_width != width:
        raise ConfigError(f"pretrain.architecture.token_width ({token_width}) differs from the width of {run} "
                          f"({width}): the MAE's tokens are its width; remove token_width or set it equal to width.")
    extra = {} if network_map is None else {"network_map": network_map}
    try:
        return MAEConfig(**{**architecture, **extra})
    except (ArchitectureError, TypeError) as error:
        raise ConfigError(f"pretrain.architecture for {run}: {error}") from None


def check(run) -> None:
    """The architecture builds, and the mask ratio leaves visible and masked tokens."""
    config = model_config(run.architecture, run.run)
    ratio = run.options["mask_ratio"]
    try:
        mask_counts(REFERENCE_CHANNELS * config.n_patches, float(ratio))
    except (TypeError, ValueError) as error:
        raise ConfigError(f"pretrain.options.mae.mask_ratio: {error}; set a ratio strictly between 0 and 1 "
                          "that leaves visible and masked tokens (BrainLM uses 0.75, or 0.2-0.9).") from None


SPEC = ObjectiveSpec(name="mae", presets=MAE_SIZES, options=OPTIONS, training_defaults=TRAINING_DEFAULTS,
                     config=MAEConfig, check=check, entry="objective:BrainLMMAE")
