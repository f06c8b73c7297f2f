"""The toy objective as the config sees it: torch-free, like every objective's spec."""

from __future__ import annotations

from dataclasses import dataclass, field

from brainscale.errors import ArchitectureError, ConfigError
from brainscale.models.config import EncoderConfig, reference_network_map
from brainscale.objectives.spec import ObjectiveSpec


@dataclass
class ToyConfig(EncoderConfig):
    """One token per network and time patch: a linear map of the network's mean signal."""

    width: int = 16
    depth: int = 1
    crop_length: int = 40
    patch_length: int = 20
    network_map: list = field(default_factory=reference_network_map)

    def __post_init__(self):
        self.check_patches("20 of 40")
        self.check_network_map()


def check(run) -> None:
    try:
        ToyConfig(**run.architecture)
    except (ArchitectureError, TypeError) as error:
        raise ConfigError(f"pretrain.architecture for {run.run}: {error}") from None


SPEC = ObjectiveSpec(
    name="toy", presets={"tiny": {"width": 16}, "small": {"width": 32}},
    options={"noise_sd": {"description": "Gaussian noise added to the crops it denoises.", "type": "number",
                          "minimum": 0, "default": 0.1}},
    loss_terms=("reconstruction",), training_defaults={"base_lr": 0.01}, config=ToyConfig, check=check,
    entry="objective:Toy")
