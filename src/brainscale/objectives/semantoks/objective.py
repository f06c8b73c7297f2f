"""Brain-Semantoks: self-distillation of network tokens (the encoder of :mod:`.model`).

Two augmented views of a subject (the option ``views``), a student and its EMA teacher, the
coding-rate CLS and network losses and the masked-token loss of
:class:`~.distillation.SelfDistillation`. Per step: Gaussian noise on every crop (drawn for the
global batch, so that data-parallel processes add what one process would), the decision to mask
of ``(seed, step)``, and the network-loss weight of the curriculum. Its options
(``pretrain.options.semantoks``, :mod:`.spec`): ``mask_probability``, ``mask_weight``,
``network_weight``, ``network_decay``, ``eps`` and ``views``.
"""

from __future__ import annotations

import math

import torch

from ...errors import TrainingError
from ..base import Objective, Step
from .distillation import SemantoksTraining
from .model import SemantoksEncoder
from .spec import SPEC, SemantoksConfig, model_config
from .views import AugmentedViews

__all__ = ["BrainSemantoks", "network_loss_weight"]


def network_loss_weight(step: int, *, weight: float, decay_steps: int) -> float:
    """The network loss's weight at ``step``: ``weight`` cosine-decayed to 0 over ``decay_steps``, 0 after."""
    if step >= decay_steps:
        return 0.0
    return weight * 0.5 * (1 + math.cos(math.pi * step / max(decay_steps, 1)))


def _noise(shape: tuple, positions: list[int], global_batch: int, seed: int, step: int, device: torch.device,
           sd: float = 0.1) -> torch.Tensor:
    """(B, V, C, T) Gaussian noise of this process's crops, drawn for the whole global batch on the
    device and sliced, so that data-parallel processes add exactly the noise one process would."""
    generator = torch.Generator(device=device).manual_seed(hash((int(seed), int(step), -1)) % (2**62))
    _, views, *rest = shape
    noise = torch.randn((views, global_batch, *rest), generator=generator, device=device)
    return noise[:, positions].transpose(0, 1) * sd


def _step_generator(seed: int, step: int) -> torch.Generator:
    """The generator of one step's batch-level choices."""
    return torch.Generator().manual_seed(hash((int(seed), int(step))) % (2**62))


class BrainSemantoks(Objective):
    spec = SPEC
    config_class, encoder_class = SemantoksConfig, SemantoksEncoder

    def config(self) -> SemantoksConfig:
        return model_config(self.architecture, self.data.network_map)

    def build(self) -> SemantoksTraining:
        return SemantoksTraining(self.config())

    def dataset(self) -> AugmentedViews:
        config, views = self.config(), self.options["views"]
        crops = self.data.crops(config.crop_length, preload=self.settings["preload"], views=2,
                                view_mode=views["mode"], min_gap=views["min_gap"])
        if views["mode"] == "cross_run" and crops.subjects_with_several_runs == 0:
            raise TrainingError(f"pretrain.options.semantoks.views.mode is cross_run, but none of the "
                                f"{len(self.data.subjects)} subjects of this subset has two runs in the shards: set the views' mode to "
                                "distant (or independent), or pretrain on subjects with repeated runs or sessions.")
        return AugmentedViews(crops, n_networks=config.n_networks, n_patches=config.n_patches, seed=self.data.seed)

    def prepare(self, batch, step: Step) -> tuple[tuple, dict]:
        views, missing, masks = batch
        use_masks = bool(torch.rand((), generator=_step_generator(step.seed, step.step))
                         < self.options["mask_probability"])
        views = views.to(step.device, non_blocking=True)
        views = views + _noise(tuple(views.shape), step.positions, step.global_batch, step.seed, step.step,
                               step.device)
        masks = masks.to(step.device, non_blocking=True) if use_masks else None
        decay_steps = max(step.budget.steps(self.options["network_decay"]), 1)
        options = {"network_weight": network_loss_weight(step.step, weight=self.options["network_weight"],
                                                         decay_steps=decay_steps),
                   "mask_weight": self.options["mask_weight"], "eps": self.options["eps"], "world_size": step.world_size}
        return (views, missing.to(step.device, non_blocking=True), masks), options

    def monitor_features(self, model: SemantoksTraining, tensors: tuple) -> torch.Tensor:
        """(2B, D) teacher CLS tokens of the step's views."""
        views, missing = tensors[0].transpose(0, 1), tensors[1]  # view-major, as the loss sees them
        with torch.no_grad():
            return model.teacher(views.flatten(0, 1), missing_channels=missing.repeat(views.shape[0], 1))[:, 0]
