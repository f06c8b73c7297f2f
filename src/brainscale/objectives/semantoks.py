"""Brain-Semantoks: self-distillation of network tokens (the encoder of ``models.semantoks``).

Two augmented views of a subject (``pretrain.views``), a student and its EMA teacher, the
coding-rate CLS and network losses and the masked-token loss of
:class:`~brainscale.training.distillation.SelfDistillation`. Per step: Gaussian noise on every
crop (drawn for the global batch, so that data-parallel processes add what one process would),
the decision to mask of ``(seed, step)``, and the network-loss weight of the curriculum. Its
settings are the top-level ``pretrain`` keys ``mask_probability``, ``mask_weight``,
``network_weight``, ``eps`` and ``views`` (kept there for the configs that predate objectives).
"""

from __future__ import annotations

import torch

from ..models.semantoks import MODEL_SIZES, SemantoksConfig, SemantoksEncoder
from ..training.distillation import SelfDistillation
from ..training.errors import TrainingError
from ..training.schedules import network_loss_weight
from ..training.views import AugmentedViews
from .base import Objective, Step, architecture_overrides

__all__ = ["BrainSemantoks", "SemantoksTraining", "model_config"]


def model_config(settings: dict, network_map: list[int]) -> SemantoksConfig:
    """The encoder config of ``settings['model']`` (a size) with ``settings['architecture']`` overrides."""
    size = settings["model"]
    if size not in MODEL_SIZES:
        raise TrainingError(f"pretrain.model '{size}' is not one of {sorted(MODEL_SIZES)}.")
    return SemantoksConfig(**{**MODEL_SIZES[size], **architecture_overrides(settings), "network_map": network_map})


class SemantoksTraining(SelfDistillation):
    """:class:`SelfDistillation` on sample-major tensors; the exported encoder is the teacher."""

    @property
    def encoder(self) -> SemantoksEncoder:
        return self.teacher

    def trainable_modules(self) -> torch.nn.Module:
        return self.student_modules()

    def ema_pairs(self) -> list:
        return [(self.teacher_modules(), self.student_modules())]

    def forward(self, views, missing, masks=None, **options) -> dict:
        # views (B, 2, C, T), masks (B, 2, N, P) or None; the terms not applied this step are left out
        losses = super().forward(views.transpose(0, 1), missing, None if masks is None else masks.transpose(0, 1),
                                 **options)
        if options["network_weight"] <= 0:
            del losses["network"]
        if masks is None:
            del losses["mask"]
        return losses


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
    name = "semantoks"
    presets = MODEL_SIZES
    loss_terms = ("cls", "network", "mask")

    @classmethod
    def check(cls, settings: dict) -> None:
        super().check(settings)
        architecture = architecture_overrides(settings)
        try:
            SemantoksConfig(**{**MODEL_SIZES[settings["model"]], **architecture})
        except ValueError as error:
            raise TrainingError(f"pretrain.architecture for semantoks-{settings['model']}: {error}") from None

    def config(self) -> SemantoksConfig:
        return model_config(self.settings, self.data.network_map)

    def build(self) -> SemantoksTraining:
        return SemantoksTraining(self.config())

    def dataset(self) -> AugmentedViews:
        config, views = self.config(), self.settings["views"]
        crops = self.data.crops(config.crop_length, preload=self.settings["preload"], views=2,
                                view_mode=views["mode"], min_gap=views["min_gap"])
        if views["mode"] == "cross_run" and crops.subjects_with_several_runs == 0:
            raise TrainingError(f"pretrain.views.mode is cross_run, but none of the {len(self.data.subjects)} "
                                "subjects of this subset has two runs in the shards: set pretrain.views.mode to "
                                "distant (or independent), or pretrain on subjects with repeated runs or sessions.")
        return AugmentedViews(crops, n_networks=config.n_networks, n_patches=config.n_patches, seed=self.data.seed)

    @classmethod
    def encoder_from_config(cls, config: dict) -> SemantoksEncoder:
        return SemantoksEncoder(SemantoksConfig(**config))

    def prepare(self, batch, step: Step) -> tuple[tuple, dict]:
        views, missing, masks = batch
        use_masks = bool(torch.rand((), generator=_step_generator(step.seed, step.step))
                         < self.settings["mask_probability"])
        views = views.to(step.device, non_blocking=True)
        views = views + _noise(tuple(views.shape), step.positions, step.global_batch, step.seed, step.step,
                               step.device)
        masks = masks.to(step.device, non_blocking=True) if use_masks else None
        options = {"network_weight": network_loss_weight(step.step, weight=self.settings["network_weight"],
                                                         decay_steps=step.budget.network_decay_steps),
                   "mask_weight": self.settings["mask_weight"], "eps": self.settings["eps"], "world_size": step.world_size}
        return (views, missing.to(step.device, non_blocking=True), masks), options

    def monitor_features(self, model: SemantoksTraining, tensors: tuple) -> torch.Tensor:
        """(2B, D) teacher CLS tokens of the step's views."""
        views, missing = tensors[0].transpose(0, 1), tensors[1]  # view-major, as the loss sees them
        with torch.no_grad():
            return model.teacher(views.flatten(0, 1), missing_channels=missing.repeat(views.shape[0], 1))[:, 0]
