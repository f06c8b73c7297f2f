"""Student and EMA teacher with their projection heads, and the three loss terms.

- CLS loss: coding-rate loss between the projected CLS tokens of student and teacher over
  the two views.
- Network loss: each network's patch tokens averaged over time (B x N features per view),
  projected, same coding-rate loss; its weight decays to 0 (a curriculum).
- Masked-token loss (when masks are given): at the masked positions of the student's view,
  negative cosine between student and teacher projections of the same token (the teacher
  sees the view unmasked), weighted 1/(masked tokens of the sample), averaged over 2B samples.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from ..base import TrainingModel
from .losses import coding_rate_loss, global_sum
from .model import ProjectionHead, SemantoksEncoder
from .spec import SemantoksConfig

__all__ = ["SelfDistillation", "SemantoksTraining"]


class SelfDistillation(TrainingModel):
    """The trainable student (encoder + head) and its frozen EMA teacher, the exported encoder."""

    def __init__(self, config: SemantoksConfig):
        super().__init__()
        self.config = config
        self.student = SemantoksEncoder(config)
        self.student_head = ProjectionHead(config)
        self.teacher = copy.deepcopy(self.student)
        self.teacher_head = copy.deepcopy(self.student_head)
        for parameter in list(self.teacher.parameters()) + list(self.teacher_head.parameters()):
            parameter.requires_grad_(False)

    def student_modules(self) -> nn.ModuleList:
        return nn.ModuleList([self.student, self.student_head])

    def teacher_modules(self) -> nn.ModuleList:
        return nn.ModuleList([self.teacher, self.teacher_head])

    @property
    def encoder(self) -> SemantoksEncoder:
        return self.teacher

    def trainable_modules(self) -> nn.Module:
        return self.student_modules()

    def ema_pairs(self) -> list:
        return [(self.teacher_modules(), self.student_modules())]

    def forward(self, views: torch.Tensor, missing: torch.Tensor, masks: torch.Tensor | None, *,
                network_weight: float, mask_weight: float, world_size: int = 1, eps: float = 0.05) -> dict:
        """Losses for (V, B, C, T) views of B subjects; ``masks`` (V, B, N, P) or None.

        With ``world_size`` > 1 each process holds B of the global batch; the losses are those of
        the global batch (see ``coding_rate_loss``).

        Returns a dict of scalar tensors: total, cls, network, mask.
        """
        n_views, batch = views.shape[:2]
        n_networks, n_patches = self.config.n_networks, self.config.n_patches
        flat = views.flatten(0, 1)
        missing = missing.repeat(n_views, 1)
        with torch.no_grad():
            teacher_tokens = self.teacher(flat, missing_channels=missing)
        student_tokens = self.student(flat, mask=None if masks is None else masks.flatten(0, 1),
                                      missing_channels=missing)

        def project_cls(tokens, head):
            return head(tokens[:, 0]).view(n_views, batch, -1)

        with torch.no_grad():
            teacher_cls = project_cls(teacher_tokens, self.teacher_head)
        cls_loss, _, _ = coding_rate_loss(project_cls(student_tokens, self.student_head), teacher_cls, eps=eps,
                                          world_size=world_size)

        def network_features(tokens, head):
            per_network = tokens[:, 1:].reshape(n_views * batch, n_networks, n_patches, -1).mean(dim=2)
            return head(per_network).view(n_views, batch * n_networks, -1)

        losses = {"cls": cls_loss}
        if network_weight > 0:
            with torch.no_grad():
                teacher_networks = network_features(teacher_tokens, self.teacher_head)
            losses["network"] = coding_rate_loss(network_features(student_tokens, self.student_head),
                                                 teacher_networks, eps=eps, world_size=world_size)[0]
        else:
            losses["network"] = cls_loss.new_zeros(())
        if masks is not None and mask_weight > 0:
            # Every token is projected and the unmasked ones get weight 0: the heads cost about 1% of
            # the encoder, and fixed shapes keep the step free of host syncs (and compile graph breaks)
            # that selecting the masked tokens would need.
            flat_masks = masks.flatten(0, 1).reshape(n_views * batch, -1)  # (2B, N*P), network-major like tokens
            with torch.no_grad():
                teacher_patches = self.teacher_head(teacher_tokens[:, 1:])
            cosine = (self.student_head(student_tokens[:, 1:]) * teacher_patches).sum(dim=-1)  # (2B, N*P)
            weights = flat_masks / flat_masks.sum(dim=1, keepdim=True).clamp(min=1)
            losses["mask"] = -global_sum((cosine * weights).sum(), world_size) / (n_views * batch * world_size)
        else:
            losses["mask"] = cls_loss.new_zeros(())
        losses["total"] = losses["cls"] + network_weight * losses["network"] + mask_weight * losses["mask"]
        return losses


class SemantoksTraining(SelfDistillation):
    """:class:`SelfDistillation` on the loop's sample-major tensors, without the terms a step did not apply."""

    def forward(self, views, missing, masks=None, **options) -> dict:
        # views (B, 2, C, T), masks (B, 2, N, P) or None
        losses = super().forward(views.transpose(0, 1), missing, None if masks is None else masks.transpose(0, 1),
                                 **options)
        if options["network_weight"] <= 0:
            del losses["network"]
        if masks is None:
            del losses["mask"]
        return losses
