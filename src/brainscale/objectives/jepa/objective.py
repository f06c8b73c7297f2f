"""Brain-JEPA: predict the EMA target encoder's representations of masked ROI x time blocks.

Tokens are ROI x ``patch_length``-TR patches with brain-gradient positions (the encoder of
:mod:`.model`); the gradients are the diffusion-map embedding of the
*pretraining subset's own* group connectivity (:mod:`.gradients`), computed once when the
model is built and stored in the model, so that an export reloads without the data.

Masks (:class:`BlockMasking`, drawn in the DataLoader workers from ``(seed, pass, item)``),
on the (C channels, P time patches) grid of a crop, with the reference's ranges (the options
``pretrain.options.jepa``, :mod:`.spec`; P = 10 there; time counts here are fractions of P, at
least one patch where a block must exist):

- observation block: ``int(C * U(observation_rois))`` random ROIs over a contiguous run of
  ``int(P * U(observation_time))`` patches (8 or 9 of 10), starting before ``P - width``
  (the reference's bound: the last patch is never observed);
- Cross-ROI targets: ``int(C * U(cross_roi_rois))`` random ROIs over ``int(P * U(cross_roi_time))``
  patches inside the observation's time span; these ROIs leave the context at every time;
- Cross-Time and Double-Cross targets, at each end of the crop (right, then left): ``int(P *
  U(cross_time_time))`` of the ``round(P * edge_fraction)`` end patches (0-3 of 3), at a fraction
  ``U(cross_time_rois)`` of the ROIs the Cross-ROI block removed from the observation
  (Double-Cross: unseen ROI and time) and the same fraction of the other ROIs (Cross-Time);
  these patches leave the context for every ROI;
- missing channels leave both; a draw with an empty context or no target is drawn again.

So the context and the targets are disjoint by construction. Items are ``(x (C, T), missing (C,),
context (C, P), targets (C, P))``; since counts differ between samples, the model selects each
sample's context (and target) tokens padded to the batch's largest count and excludes the
padding from attention as keys and from the loss (nothing is dropped, padding costs compute).

Loss: smooth-L1 (beta 1) between the predictor's outputs at the target positions and the
LayerNorm (no affine) of the EMA target encoder's outputs of the whole crop, averaged over the
target tokens and features. The target encoder is the exported one.

Presets: ``tiny`` and ``small`` for the CPU demo (48-TR crops: 3 patches of 16, 1,371 tokens, every
target kind present; one attention head, which the CPU kernels run fastest), ``base`` the paper's
ViT-B (D 768, 12 layers, 12 heads; predictor 6 x 384; 160-TR crops of 10 patches of 16).

Training keys of the spec (``training_defaults``: they replace the top-level ``pretrain`` values for
jepa runs): ``base_lr`` 0.032 per 256 samples, i.e. the reference's peak 1e-3 at the demo's batch
of 8; weight decay 0.04 -> 0.4 and EMA momentum 0.996 -> 1 as the reference. The paper's recipe,
the ``base`` preset's: 300 epochs, 40 of warm-up to a peak lr 1e-3 (from 5e-5) then cosine to
1e-6, weight decay cosine 0.04 -> 0.4, EMA momentum 0.996 -> 1, AdamW, bf16, on 4 GPUs with 16
crops per GPU and 8 accumulation steps (512 samples per optimizer step, the lr not scaled). With
this project's schedules (warm-up from 0, cosine to 0) the pretrain keys that reproduce it are::

    pretrain:
      objectives: [jepa-base]
      batch_size: 512          # 4 GPUs x 8 accumulation slices x 16 crops, as the reference
      gpus_per_job: 4
      accumulate: 8
      budget: {unit: epochs, total: 300, warmup: 40, checkpoint_every: 10}
      options:
        jepa: {base_lr: 5.0e-4, weight_decay: [0.04, 0.4], momentum: [0.996, 1.0]}

(``base_lr`` is per 256 samples: 5e-4 x 512 / 256 = the reference's 1e-3.)
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn

from ..base import CropItems, Objective, Step, TrainingModel, item_generator
from .gradients import subset_gradients
from .masking import MaskRanges
from .model import JEPAEncoder, JEPAPredictor, mask_indices, select_tokens
from .spec import SPEC, JEPAConfig

__all__ = ["BrainJEPA", "BlockMasking", "JEPATraining", "MaskedCrops", "jepa_loss", "token_indices"]


def _uniform(generator: torch.Generator, bounds) -> float:
    low, high = bounds
    return low + (high - low) * float(torch.rand((), generator=generator))


def _below(generator: torch.Generator, high: int) -> int:
    """A random integer in [0, max(high, 1))."""
    return int(torch.randint(0, max(high, 1), (), generator=generator))


class BlockMasking(MaskRanges):
    """The observation block and the Cross-ROI, Cross-Time and Double-Cross targets (module docstring):
    the ranges of :class:`~.masking.MaskRanges` (and its check, ``problem``) and their draws."""

    def draw(self, n_channels: int, n_patches: int, *, generator: torch.Generator,
             missing: torch.Tensor | None = None, attempts: int = 100) -> tuple[torch.Tensor, torch.Tensor]:
        """(context, targets), two disjoint, non-empty (C, P) bool masks of one sample.

        Raises
        ------
        ValueError
            If ``attempts`` draws all leave the context or the targets empty (e.g. every channel missing).
        """
        for _ in range(attempts):
            blocks = self.blocks(n_channels, n_patches, generator=generator)
            context = blocks["context"]
            targets = blocks["cross_roi"] | blocks["cross_time"] | blocks["double_cross"]
            if missing is not None:
                context = context & ~missing[:, None]
                targets = targets & ~missing[:, None]
            if context.any() and targets.any():
                return context, targets
        absent = 0 if missing is None else int(missing.sum())
        raise ValueError(f"no Brain-JEPA mask with a context and targets in {attempts} draws ({absent} of "
                         f"{n_channels} channels missing): check the shards' channel_missing and the mask options")

    def blocks(self, n_channels: int, n_patches: int, *, generator: torch.Generator) -> dict:
        """One draw's (C, P) bool masks: ``observation``, ``cross_roi``, ``cross_time``, ``double_cross``
        and ``context`` (the observation without the targets' ROIs and end patches)."""
        empty = torch.zeros(n_channels, n_patches, dtype=torch.bool)
        observation, cross_roi, cross_time, double_cross = (empty.clone() for _ in range(4))
        # observation block: random ROIs x a contiguous run of patches
        observed = torch.randperm(n_channels, generator=generator)[
            :int(n_channels * _uniform(generator, self.observation_rois))]
        width = min(max(1, int(n_patches * _uniform(generator, self.observation_time))), n_patches)
        start = _below(generator, n_patches - width)
        observation[observed, start:start + width] = True
        # Cross-ROI: other ROIs inside the observed time span, removed from the context at every time
        chosen = torch.randperm(n_channels, generator=generator)[
            :int(n_channels * _uniform(generator, self.cross_roi_rois))]
        length = min(max(1, int(n_patches * _uniform(generator, self.cross_roi_time))), width)
        offset = start + _below(generator, width - length)
        cross_roi[chosen, offset:offset + length] = True
        context = observation.clone()
        context[chosen] = False
        # Cross-Time (ROIs not removed) and Double-Cross (removed ROIs) at the end patches, which
        # leave the context for every ROI
        removed = observation.any(dim=1) & cross_roi.any(dim=1)
        groups = ((torch.nonzero(removed).flatten(), double_cross), (torch.nonzero(~removed).flatten(), cross_time))
        edge = self.edge(n_patches)
        for first_column in (n_patches - edge, 0):  # the right end, then the left
            fraction = _uniform(generator, self.cross_time_rois)
            count = min(int(n_patches * _uniform(generator, self.cross_time_time)), edge)
            columns = first_column + torch.randperm(edge, generator=generator)[:count]
            for rois, block in groups:
                rois = rois[torch.randperm(len(rois), generator=generator)[:int(len(rois) * fraction)]]
                if count:
                    block[rois[:, None], columns[None, :]] = True
            context[:, columns] = False
        return dict(observation=observation, cross_roi=cross_roi, cross_time=cross_time, double_cross=double_cross,
                    context=context)


class MaskedCrops(CropItems):
    """Items (x (C, T), missing (C,), context (C, P), targets (C, P)) keyed by ``(pass, item)``; the
    masks come from the generator of ``(seed, pass, item)``."""

    def __init__(self, crops, *, n_patches: int, masking: BlockMasking, seed: int):
        super().__init__(crops, seed=seed)
        self.n_patches, self.masking = n_patches, masking

    def draw(self, x, missing, epoch: int, item: int) -> tuple:
        generator = item_generator(self.seed, epoch, item)
        context, targets = self.masking.draw(x.shape[0], self.n_patches, generator=generator, missing=missing)
        return x, missing, context, targets


def jepa_loss(predictions: torch.Tensor, targets: torch.Tensor, valid: torch.Tensor | None = None) -> torch.Tensor:
    """Smooth-L1 (beta 1) of (B, M, D) predictions and targets, averaged over the valid (B, M) tokens."""
    per_token = F.smooth_l1_loss(predictions.float(), targets.float(), reduction="none").mean(dim=-1)
    if valid is None:
        return per_token.mean()
    return (per_token * valid).sum() / valid.sum().clamp_min(1)


def token_indices(context_mask: torch.Tensor, target_mask: torch.Tensor) -> tuple[tuple, dict]:
    """The (B, C, P) context and target masks as the forward takes them: (context index, context valid,
    target index, target valid) (:func:`~.model.mask_indices`) and whether no context
    token is padding (then attention needs no mask). Computed where the masks are drawn, on the CPU:
    the padded sizes depend on the batch, which on a GPU would make every step wait for the host."""
    context_index, context_valid = mask_indices(context_mask.flatten(1))  # (B, K)
    target_index, target_valid = mask_indices(target_mask.flatten(1))  # (B, M)
    return (context_index, context_valid, target_index, target_valid), {"all_context_valid": bool(context_valid.all())}


class JEPATraining(TrainingModel):
    """Context encoder, EMA target encoder (the exported one) and predictor."""

    def __init__(self, config: JEPAConfig):
        super().__init__()
        self.context_encoder = JEPAEncoder(config)
        self.predictor = JEPAPredictor(config)
        self.target_encoder = copy.deepcopy(self.context_encoder)
        self.target_encoder.requires_grad_(False)

    @property
    def encoder(self) -> JEPAEncoder:
        return self.target_encoder

    def set_gradients(self, gradients: torch.Tensor) -> None:
        """Store the (C, G) brain gradients in both encoders and the predictor."""
        for module in (self.context_encoder, self.target_encoder):
            module.set_gradients(gradients)
        self.predictor.positions.gradients.copy_(torch.as_tensor(gradients, dtype=torch.float32))

    def trainable_modules(self) -> nn.ModuleList:
        return nn.ModuleList([self.context_encoder, self.predictor])

    def ema_pairs(self) -> list:
        return [(self.target_encoder, self.context_encoder)]

    @torch.no_grad()
    def targets(self, x: torch.Tensor, missing: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        """(B, M, D) LayerNorm of the target encoder's outputs of the whole crop, at (B, M) indices."""
        tokens = self.target_encoder(x, missing_channels=missing)
        return select_tokens(F.layer_norm(tokens, tokens.shape[-1:]), index)

    def forward(self, x: torch.Tensor, missing: torch.Tensor, context_index: torch.Tensor,
                context_valid: torch.Tensor, target_index: torch.Tensor, target_valid: torch.Tensor,
                all_context_valid: bool = False) -> dict:
        """{"total": loss} of crops (B, C, T) and missing (B, C), given the (B, K) context and (B, M)
        target token indices and their validity (:func:`token_indices` of the masks)."""
        targets = self.targets(x, missing, target_index)
        context = self.context_encoder(x, missing, context_index, None if all_context_valid else context_valid)
        predictions = self.predictor(context, context_index, context_valid, target_index, target_valid)
        return {"total": jepa_loss(predictions, targets, target_valid)}


class BrainJEPA(Objective):
    spec = SPEC
    config_class, encoder_class = JEPAConfig, JEPAEncoder

    def config(self) -> JEPAConfig:
        architecture = self.architecture
        network_map = self.data.network_map
        n_gradients = min(architecture.get("n_gradients", 30), len(network_map) - 1)
        return JEPAConfig(**{**architecture, "n_gradients": n_gradients, "network_map": network_map})

    def gradients(self) -> torch.Tensor:
        """(C, G) brain gradients of the subset's group connectivity (computed once per objective)."""
        if not hasattr(self, "_gradients"):
            self._gradients = torch.from_numpy(subset_gradients(self.data, self.config().n_gradients))
        return self._gradients

    def build(self) -> JEPATraining:
        model = JEPATraining(self.config())
        model.set_gradients(self.gradients())
        return model

    def prepare(self, batch, step: Step) -> tuple[tuple, dict]:
        """The crops and the masks' token indices (computed here, on the CPU) on the device."""
        x, missing, context_mask, target_mask = batch
        indices, options = token_indices(context_mask, target_mask)
        return tuple(t.to(step.device, non_blocking=True) for t in (x, missing, *indices)), options

    def dataset(self) -> MaskedCrops:
        config = self.config()
        crops = self.data.crops(config.crop_length, preload=self.settings["preload"])
        return MaskedCrops(crops, n_patches=config.n_patches, masking=BlockMasking.from_options(self.options),
                           seed=self.data.seed)
