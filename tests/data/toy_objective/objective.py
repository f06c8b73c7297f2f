"""The toy objective's model and training: denoise the networks' patch means from their tokens."""

from __future__ import annotations

import torch
from torch import nn

from brainscale.objectives.base import CropItems, Objective, TrainingModel

from .spec import SPEC, ToyConfig


class ToyEncoder(nn.Module):
    has_cls = False

    def __init__(self, config: ToyConfig):
        super().__init__()
        self.config = config
        self.embed = nn.Linear(config.patch_length, config.width)
        self.norm = nn.LayerNorm(config.width)
        self.register_buffer("networks", torch.as_tensor(config.network_map), persistent=False)

    def patch_means(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, T) -> (B, N * P, L): each network's mean signal, cut into patches."""
        patches = x.unfold(2, self.config.patch_length, self.config.patch_length)
        means = [patches[:, self.networks == n].mean(dim=1) for n in range(self.config.n_networks)]
        return torch.stack(means, dim=1).flatten(1, 2)

    def layer_outputs(self, x: torch.Tensor, missing_channels=None) -> list[torch.Tensor]:
        return [self.norm(self.embed(self.patch_means(x)))]

    def forward(self, x: torch.Tensor, missing_channels=None) -> torch.Tensor:
        return self.layer_outputs(x, missing_channels)[-1]


class ToyTraining(TrainingModel):
    def __init__(self, config: ToyConfig, noise_sd: float):
        super().__init__()
        self.encoder, self.head, self.noise_sd = ToyEncoder(config), nn.Linear(config.width, config.patch_length), noise_sd

    def forward(self, x: torch.Tensor, missing: torch.Tensor) -> dict:
        noisy = x + self.noise_sd * torch.randn_like(x)
        loss = nn.functional.mse_loss(self.head(self.encoder(noisy)), self.encoder.patch_means(x))
        return {"total": loss, "reconstruction": loss}


class Toy(Objective):
    spec = SPEC
    config_class, encoder_class = ToyConfig, ToyEncoder

    def config(self) -> ToyConfig:
        return ToyConfig(**self.architecture, network_map=self.data.network_map)

    def build(self) -> ToyTraining:
        return ToyTraining(self.config(), self.options["noise_sd"])

    def dataset(self) -> CropItems:
        crops = self.data.crops(self.config().crop_length, preload=self.settings["preload"])
        return CropItems(crops, seed=self.data.seed)
