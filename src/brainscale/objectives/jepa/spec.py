"""Brain-JEPA as the config sees it: the encoder and predictor config, its sizes and the mask options.

Torch-free (see :mod:`brainscale.objectives.spec`); the objective is described in :mod:`.objective`.
The options, under ``pretrain.options.jepa``, are the masks' ranges (:mod:`.masking`); the
objective sets its own ``base_lr``, ``weight_decay`` and ``momentum`` (``training_defaults``).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ...errors import ArchitectureError, ConfigError
from ...models.config import REFERENCE_CHANNELS, EncoderConfig, reference_network_map
from ..spec import ObjectiveSpec
from .masking import MASK_DEFAULTS, RANGES, MaskRanges

__all__ = ["JEPAConfig", "PRESETS", "OPTIONS", "check", "SPEC"]

@dataclass
class JEPAConfig(EncoderConfig):
    """Architecture of the Brain-JEPA encoder and predictor (saved with every checkpoint and export).

    The defaults are the paper's ViT-B (the ``base`` preset).
    """

    crop_length: int = 160
    patch_length: int = 16
    width: int = 768  # D
    depth: int = 12
    head_dim: int = 64
    mlp_ratio: float = 4.0
    layerscale_init: float = 1.0  # 1.0: close to the reference's plain ViT blocks
    predictor_width: int = 384
    predictor_depth: int = 6
    n_gradients: int = 30
    network_map: list = field(default_factory=reference_network_map)  # (channels,) network of each channel

    def __post_init__(self):
        self.check_patches("16 of 160")
        for name in ("width", "predictor_width"):
            value = getattr(self, name)
            if value % 4 or value % self.heads:
                raise ArchitectureError(f"{name} ({value}) must be a multiple of 4 (two sin-cos halves) and of the "
                                        f"{self.heads} attention heads (width / head_dim).")
        self.check_heads(even=False)
        if self.n_gradients < 1:
            raise ArchitectureError(f"n_gradients ({self.n_gradients}) must be at least 1.")


#: Named sizes (fields of :class:`JEPAConfig`); ``base`` is the paper's ViT-B.
PRESETS = {
    "tiny": dict(crop_length=48, patch_length=16, width=32, depth=1, head_dim=32, predictor_width=32,
                 predictor_depth=1, layerscale_init=0.1),
    "small": dict(crop_length=48, patch_length=16, width=64, depth=2, head_dim=64, predictor_width=32,
                  predictor_depth=1, layerscale_init=0.1),
    "base": dict(crop_length=160, patch_length=16, width=768, depth=12, head_dim=64, predictor_width=384,
                 predictor_depth=6, layerscale_init=1.0),
}

_RANGE_DESCRIPTIONS = {
    "observation_rois": "Fraction of the ROIs in the observation block.",
    "observation_time": "Fraction of the time patches in the observation block (a contiguous run).",
    "cross_roi_rois": "Fraction of the ROIs of the Cross-ROI targets (removed from the context).",
    "cross_roi_time": "Fraction of the time patches of the Cross-ROI targets, inside the observed span.",
    "cross_time_rois": "Fraction of the ROIs of the Cross-Time and Double-Cross targets.",
    "cross_time_time": "Fraction of the time patches of the Cross-Time and Double-Cross targets (at each end).",
}

OPTIONS = {
    **{name: {"description": f"{_RANGE_DESCRIPTIONS[name]} [low, high], drawn uniformly.", "type": "array",
              "items": {"type": "number", "minimum": 0, "maximum": 1}, "minItems": 2, "maxItems": 2,
              "default": MASK_DEFAULTS[name]} for name in RANGES},
    "edge_fraction": {"description": "Fraction of the time patches at each end where Cross-Time targets may lie.",
                      "type": "number", "minimum": 0, "maximum": 0.5, "default": MASK_DEFAULTS["edge_fraction"]},
}

#: The training keys of a jepa run (:mod:`.objective`: the demo's learning rate; the ``base`` recipe
#: sets ``base_lr`` 5e-4).
TRAINING_DEFAULTS = {"base_lr": 0.032, "weight_decay": [0.04, 0.4], "momentum": [0.996, 1.0]}

_ARCHITECTURE_KEYS = tuple(name for name in JEPAConfig.__dataclass_fields__ if name != "network_map")


def check(run) -> None:
    """Reject an architecture or mask setting that cannot train (ConfigError naming the key)."""
    architecture = dict(run.architecture)
    known = set(_ARCHITECTURE_KEYS)
    unknown = sorted(set(architecture) - known)
    if unknown:
        raise ConfigError(f"pretrain.architecture: {unknown} do not apply to {run.run}; set them to null "
                          f"(a jepa architecture takes {sorted(known)}).")
    crop, patch = architecture["crop_length"], architecture["patch_length"]
    if isinstance(crop, int) and isinstance(patch, int) and patch >= 1 and crop % patch:  # else JEPAConfig says
        raise ConfigError(f"pretrain.architecture.patch_length ({patch}) does not divide the crop_length ({crop}) "
                          f"of {run.run}: choose a divisor of the crop (the reference cuts 160 TRs into 16-TR "
                          "patches).")
    try:
        config = JEPAConfig(**architecture)
    except (ArchitectureError, TypeError) as error:
        raise ConfigError(f"pretrain.architecture for {run.run}: {error}") from None
    try:
        problem = MaskRanges.from_options(run.options).problem(REFERENCE_CHANNELS, config.n_patches)
    except (TypeError, ValueError):
        problem = "the mask ranges must be pairs of numbers [low, high] and edge_fraction a number"
    if problem:
        raise ConfigError(f"pretrain.options.jepa: {problem}.")


SPEC = ObjectiveSpec(name="jepa", presets=PRESETS, options=OPTIONS, training_defaults=TRAINING_DEFAULTS,
                     config=JEPAConfig, check=check, entry="objective:BrainJEPA")
