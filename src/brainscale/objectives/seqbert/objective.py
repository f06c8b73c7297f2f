"""Sequence-BERT of learning-from-brains (Thomas et al., NeurIPS 2022): masked TRs and is-next.

A BERT-style encoder (:class:`~brainscale.objectives.sequence.model.BidirectionalEncoder`: one token
per TR as in :mod:`brainscale.objectives.csm`, a learned CLS first, full attention) with two losses:

- **masked TRs**: ``round(mask_ratio * T)`` TRs of each crop (``mask_ratio`` 0.2, the paper's),
  drawn without replacement, have their token replaced by a learned mask token (kept by the
  training model, not the export) before the time embedding is added; ``Linear(D -> 457)`` of
  their outputs is compared with the input, L1 over the channels the run has;
- **is-next**: the crop is cut into two halves (T // 2 and the rest). With probability 1/2 the
  second half is the true continuation (the crop as read: halves contiguous), otherwise it is
  replaced by as many TRs from another place of the subset: a random run of *another subject*
  (uniform over the other subjects of the subset; the same subject's runs where the subset
  has one subject) at a random start, its missing channels added to the crop's. The reference
  code likewise pairs the first half of one sequence with the second half of a sequence from
  a disjoint set of runs. ``Linear(D -> 2)`` of the CLS output, cross-entropy (label 1: next).
  Unlike the reference (times restarting in each half, segment and SEP embeddings), the times
  run on across the halves and there is no segment embedding: a probed crop, one sequence of
  T TRs, then looks exactly like a true pair.

``total = reconstruction + is_next_weight * is_next`` (``log.csv`` columns ``reconstruction``
and ``is_next``). The masks, the is-next label and the other place are drawn in the DataLoader
workers from ``(seed, pass, item)``; every item has the same shapes. The probes read the CLS
(``cls``) and the token mean (``mean``) of every layer.

Options and config-time checks: :mod:`.spec`. Sizes: those of :mod:`brainscale.objectives.csm`
(``tiny``, ``small``, ``base`` = the paper's 4 layers, 12 heads, 768, crops of 48 TRs). The
paper's recipe (reference ``scripts/train.py`` defaults: AdamW 1e-4 at batch 64, weight decay
0.1, 1 % warmup, linear decay, clip 1.0, dropout 0.1; 300k steps), as near as this loop's cosine
schedule comes::

    pretrain:
      objectives: [seqbert-base]
      batch_size: 64
      budget: {unit: steps, total: 300000, warmup: 3000, checkpoint_every: 10000}
      options:
        seqbert: {mask_ratio: 0.2, base_lr: 0.0004, weight_decay: [0.1, 0.1], grad_clip: 1.0}
"""

from __future__ import annotations

from functools import partial

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ...shards.reader import pad_crop
from ..base import CropItems, TrainingModel, item_generator
from ..sequence.model import BidirectionalEncoder, TransformerConfig, masked_l1
from ..sequence.objective import SequenceObjective
from .spec import MIN_PAIR_CROP, SPEC, check_pairs, check_ratio, mask_count

__all__ = ["SequencePairs", "BERTTraining", "SequenceBERT", "item_generator", "step_mask", "check_ratio",
           "MIN_PAIR_CROP"]


def step_mask(generator: torch.Generator, missing: torch.Tensor, *, length: int, count: int) -> torch.Tensor:
    """(length,) bool: ``count`` TRs drawn without replacement."""
    mask = torch.zeros(length, dtype=torch.bool)
    mask[torch.randperm(length, generator=generator)[:count]] = True
    return mask


class SequencePairs(CropItems):
    """Items ``(x (C, T), missing (C,), mask, is_next ())`` of a ``ShardDataset`` (module docstring).

    ``draw_mask(generator, missing)`` draws the item's mask ((T,) TRs or (C,) channels) after
    the is-next draws.
    """

    def __init__(self, crops, *, seed: int, draw_mask):
        super().__init__(crops, seed=seed)
        self.draw_mask = draw_mask

    def draw(self, x, missing, epoch: int, item: int) -> tuple:
        generator = item_generator(self.seed, epoch, item)
        is_next = bool(torch.rand((), generator=generator) < 0.5)
        if not is_next:
            half = x.shape[1] // 2
            other, other_missing = self.elsewhere(int(item), x.shape[1] - half, generator)
            x, missing = torch.cat([x[:, :half], other], dim=1), missing | other_missing
        return x, missing, self.draw_mask(generator, missing), torch.tensor(int(is_next))

    def elsewhere(self, item: int, length: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """``length`` TRs (C, length) and the missing mask of a random run of another subject."""
        subjects = len(self.crops.runs_of_subject)
        other = item if subjects == 1 else \
            (item + 1 + int(torch.randint(subjects - 1, (), generator=generator))) % subjects
        runs = self.crops.runs_of_subject[other]
        run = runs[int(torch.randint(len(runs), (), generator=generator))]
        start = int(torch.randint(max(self.crops.runs[run][2] - length, 0) + 1, (), generator=generator))
        data, missing = self.crops.read_run(run)
        window = np.ascontiguousarray(pad_crop(data[:, start:start + length], length), dtype=np.float32)
        return torch.from_numpy(window), torch.from_numpy(np.array(missing, dtype=bool))


class BERTTraining(TrainingModel):
    """The BERT-style encoder, its reconstruction and is-next heads (and the TR mask token).

    ``masking``: ``"steps"`` (Seq-BERT: the mask is (B, T), masked TRs get the mask token) or
    ``"channels"`` (Network-BERT: the mask is (B, C), masked channels are hidden like missing
    ones, zeroed and flagged, at every TR).
    """

    def __init__(self, config: TransformerConfig, *, masking: str, is_next_weight: float):
        super().__init__()
        if masking not in ("steps", "channels"):
            raise ValueError(f"masking must be 'steps' or 'channels', received {masking!r}")
        self.masking, self.is_next_weight = masking, float(is_next_weight)
        self.bert = BidirectionalEncoder(config)
        if masking == "steps":
            self.mask_token = nn.Parameter(torch.randn(config.width) * 0.02)
        self.reconstruct = nn.Linear(config.width, config.n_channels)
        self.is_next_head = nn.Linear(config.width, 2)

    @property
    def encoder(self) -> BidirectionalEncoder:
        return self.bert

    def outputs(self, x: torch.Tensor, missing: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(reconstruction (B, C, T), is-next logits (B, 2)) of masked crops."""
        if self.masking == "steps":
            tokens = self.bert(x, missing_channels=missing, masked_steps=mask, mask_token=self.mask_token)
        else:
            tokens = self.bert(x, missing_channels=missing | mask)
        return self.reconstruct(tokens[:, 1:]).transpose(1, 2), self.is_next_head(tokens[:, 0])

    def forward(self, x: torch.Tensor, missing: torch.Tensor, mask: torch.Tensor, is_next: torch.Tensor,
                **options) -> dict:
        # x (B, C, T), missing (B, C), mask (B, T) or (B, C), is_next (B,)
        prediction, logits = self.outputs(x, missing, mask)
        if self.masking == "steps":
            weight = mask[:, None, :] & ~missing[:, :, None]
        else:
            weight = (mask & ~missing)[:, :, None]
        reconstruction = masked_l1(prediction, x, weight)
        is_next_loss = F.cross_entropy(logits.float(), is_next.long())
        return {"total": reconstruction + self.is_next_weight * is_next_loss, "reconstruction": reconstruction,
                "is_next": is_next_loss}


class SequenceBERT(SequenceObjective):
    spec = SPEC
    config_class, encoder_class = TransformerConfig, BidirectionalEncoder
    masking = "steps"
    #: ``count(name, config, options)``: the masked count of an item, checked (see :mod:`.spec`).
    count_masked = staticmethod(mask_count)

    def masked_count(self, config: TransformerConfig) -> int:
        """The masked count on the run's channels and crop (the config-time check, on the shards' config)."""
        return check_pairs(self.name, config, self.options, self.count_masked)

    def mask_drawer(self, config: TransformerConfig):
        """``draw(generator, missing)`` of one item's mask (picklable, for the DataLoader workers)."""
        return partial(step_mask, length=config.crop_length, count=self.masked_count(config))

    def build(self) -> BERTTraining:
        return BERTTraining(self.config(), masking=self.masking, is_next_weight=self.options["is_next_weight"])

    def dataset(self) -> SequencePairs:
        config = self.config()
        draw_mask = self.mask_drawer(config)
        crops = self.data.crops(config.crop_length, preload=self.settings["preload"])
        return SequencePairs(crops, seed=self.data.seed, draw_mask=draw_mask)
