"""Shuffled autoregression as the config sees it: the encoder config, its sizes and the options.

Torch-free (see :mod:`brainscale.objectives.spec`); the objective is described in :mod:`.objective`.
The options, under ``pretrain.options.shuffled``: ``target``, ``vocabulary``, ``codebook_patches``
and ``codebook_cache``; the objective sets its own ``base_lr`` and ``weight_decay``
(``training_defaults``).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ...errors import ArchitectureError, ConfigError
from ...models.config import EncoderConfig, reference_network_map
from ..spec import ObjectiveSpec

__all__ = ["ShuffledConfig", "PRESETS", "OPTIONS", "check", "SPEC"]


@dataclass
class ShuffledConfig(EncoderConfig):
    """Architecture of the encoder (saved with every checkpoint and export)."""

    width: int = 384  # D
    depth: int = 12
    head_dim: int = 64
    mlp_ratio: float = 4.0
    crop_length: int = 100
    patch_length: int = 20
    network_map: list = field(default_factory=reference_network_map)  # (channels,) network index per channel
    token_width: int | None = None  # must equal width; kept to reject configs that say otherwise

    def __post_init__(self):
        self.check_token_width()
        if self.width < 2:
            raise ArchitectureError(f"width ({self.width}) must be even and a multiple of head_dim "
                                    f"({self.head_dim}).")
        self.check_heads()
        if self.depth < 1:
            raise ArchitectureError(f"depth ({self.depth}) must be at least 1.")
        if self.patch_length < 1 or self.crop_length < self.patch_length:
            raise ArchitectureError(f"crop_length ({self.crop_length}) is shorter than one patch of patch_length "
                                    f"({self.patch_length}) TRs: lengthen the crop or shorten the patches.")
        self.check_patches("20 of 100")
        self.check_network_map()

    @property
    def n_tokens(self) -> int:
        return self.n_networks * self.n_patches

    def channels_of_network(self) -> list[list[int]]:
        """The channel indices of each network, in network order."""
        return [[c for c, n in enumerate(self.network_map) if n == network] for network in range(self.n_networks)]


#: Named sizes (fields of :class:`ShuffledConfig`).
PRESETS = {
    "tiny": dict(width=64, depth=2, head_dim=32, crop_length=100, patch_length=20),
    "small": dict(width=384, depth=12, head_dim=64, crop_length=100, patch_length=20),
    "base": dict(width=768, depth=12, head_dim=64, crop_length=100, patch_length=20),
}

OPTIONS = {
    "target": {"description": "codes: k-means codes of each network's patches, cross-entropy (boldGPT's); "
                              "continuous: the patch values, MSE.", "enum": ["codes", "continuous"],
               "default": "codes"},
    "vocabulary": {"description": "Codes per network (boldGPT uses 1024, the demo 64).", "type": "integer",
                   "minimum": 2, "default": 64},
    "codebook_patches": {"description": "The codebook is fitted on at most this many patches (at least "
                                        "vocabulary).", "type": "integer", "minimum": 2, "default": 8192},
    "codebook_cache": {"description": "Folder of the cached codebooks; null: <shard folder>/../cache/codebooks.",
                       "type": ["string", "null"], "default": None},
}

#: The training keys of a shuffled run (the demo's; boldGPT's recipe is in :mod:`.objective`).
TRAINING_DEFAULTS = {"base_lr": 0.032, "weight_decay": [0.05, 0.05]}


def _option_error(key: str, problem: str) -> ConfigError:
    return ConfigError(f"pretrain.options.shuffled.{key}: {problem}")


def check(run) -> None:
    """Reject an architecture or option that cannot train (ConfigError naming the key and the fix)."""
    try:
        ShuffledConfig(**run.architecture)
    except (ArchitectureError, TypeError) as error:
        raise ConfigError(f"pretrain.architecture of {run.run}: {error}") from None
    options = run.options
    if options["target"] not in ("codes", "continuous"):
        raise _option_error("target", f"'{options['target']}' is not codes (k-means codes, cross-entropy) or "
                                      "continuous (patch values, MSE).")
    vocabulary, patches = options["vocabulary"], options["codebook_patches"]
    if isinstance(vocabulary, bool) or not isinstance(vocabulary, int) or vocabulary < 2:
        raise _option_error("vocabulary", f"{vocabulary!r} codes per network: set an integer of at least 2 "
                                          "(boldGPT uses 1024, the demo 64).")
    if isinstance(patches, bool) or not isinstance(patches, int) or patches < vocabulary:
        raise _option_error("codebook_patches", f"{patches!r}: the codebook of {vocabulary} codes is fitted "
                                                f"on at most this many patches; set an integer of at least "
                                                f"{vocabulary} (the default is 8192).")
    if options["codebook_cache"] is not None and not isinstance(options["codebook_cache"], str):
        raise _option_error("codebook_cache", f"{options['codebook_cache']!r}: give a folder, or null for "
                                              "<shard folder>/../cache/codebooks.")


SPEC = ObjectiveSpec(name="shuffled", presets=PRESETS, options=OPTIONS, training_defaults=TRAINING_DEFAULTS,
                     config=ShuffledConfig, check=check, entry="objective:ShuffledAutoregression")
