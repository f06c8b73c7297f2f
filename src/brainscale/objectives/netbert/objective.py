"""Network-BERT of learning-from-brains (Thomas et al., NeurIPS 2022): masked channels and is-next.

Seq-BERT (:mod:`brainscale.objectives.seqbert`: the same BERT-style encoder with CLS, the same
is-next pairs and loss) with another mask: ``round(mask_ratio * 457)`` = 46 channels of each crop
(``mask_ratio`` 0.1, the paper's) are hidden at *every* TR and reconstructed, L1 in input
space at those channels. A masked channel is presented exactly as a missing one (zeroed and
flagged by the missing-channel embedding, see :mod:`brainscale.objectives.sequence.model`), so the
pretext task is the imputation the encoder also faces on runs with absent parcels.

What a "network" is (``unit``): in the paper the masked units are the input dimensions (the
DiFuMo-1024 components; the reference code masks each input dimension with probability
``masking_rate`` at all TRs), so the default ``unit: channels`` masks input channels, here the
457 parcels. ``unit: networks`` masks whole pipeline networks instead (``network_map``: 7
cortical, subcortex, cerebellum): ``round(0.1 * 9)`` = one network of 7 to 91 channels per
crop, a coarser task (and at 9 networks the ratio only takes the values 1/9, 2/9, ...). The
masked channels are drawn among those the run has (fixed count; one present channel or network
is always kept visible); a masked network's missing channels stay missing, not targets.

Options and config-time checks: :mod:`.spec`. Sizes: those of :mod:`brainscale.objectives.csm`
(``base`` = the paper's 4 layers, 12 heads, 768; crops of 48 TRs).
The paper's recipe as near as this loop comes (see :mod:`brainscale.objectives.seqbert`)::

    pretrain:
      objectives: [netbert-base]
      batch_size: 64
      budget: {unit: steps, total: 300000, warmup: 3000, checkpoint_every: 10000}
      options:
        netbert: {mask_ratio: 0.1, base_lr: 0.0004, weight_decay: [0.1, 0.1], grad_clip: 1.0}
"""

from __future__ import annotations

from functools import partial

import torch

from ..seqbert.objective import SequenceBERT
from ..sequence.model import TransformerConfig
from .spec import SPEC, UNITS, mask_count

__all__ = ["NetworkBERT", "channel_mask", "network_mask", "UNITS"]


def channel_mask(generator: torch.Generator, missing: torch.Tensor, *, count: int) -> torch.Tensor:
    """(C,) bool: ``count`` of the present channels (at most all of them but one)."""
    present = torch.nonzero(~missing).flatten()
    chosen = present[torch.randperm(len(present), generator=generator)[:min(count, max(len(present) - 1, 0))]]
    mask = torch.zeros_like(missing)
    mask[chosen] = True
    return mask


def network_mask(generator: torch.Generator, missing: torch.Tensor, *, network_map: torch.Tensor,
                 count: int) -> torch.Tensor:
    """(C,) bool: the present channels of ``count`` networks that have any (one such network kept)."""
    networks = torch.unique(network_map[~missing])
    chosen = networks[torch.randperm(len(networks), generator=generator)[:min(count, max(len(networks) - 1, 0))]]
    return torch.isin(network_map, chosen) & ~missing


class NetworkBERT(SequenceBERT):
    spec = SPEC
    masking = "channels"
    count_masked = staticmethod(mask_count)

    def mask_drawer(self, config: TransformerConfig):
        count = self.masked_count(config)
        if self.options["unit"] == "channels":
            return partial(channel_mask, count=count)
        return partial(network_mask, network_map=torch.as_tensor(config.network_map), count=count)
