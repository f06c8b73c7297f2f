"""The ranges of Brain-JEPA's block masks and what they allow (torch-free: the config checks use it).

:class:`MaskRanges` holds the options of :mod:`.spec` and says, from arithmetic alone, whether they
can leave a sample without context or targets (:meth:`MaskRanges.problem`);
:class:`~.objective.BlockMasking` adds the draws (the masks themselves are described in
:mod:`.objective`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields

__all__ = ["MASK_DEFAULTS", "RANGES", "MaskRanges", "count_range"]

#: The masks' ranges (the reference's ``ukb_vitb_ep300.yaml``); fractions of the channels or patches.
MASK_DEFAULTS = dict(observation_rois=[0.84, 1.0], observation_time=[0.84, 1.0], cross_roi_rois=[0.45, 0.6],
                     cross_roi_time=[0.2, 0.6], cross_time_rois=[0.15, 0.3], cross_time_time=[0.0, 0.4],
                     edge_fraction=0.3)

#: The options that are ``[low, high]`` ranges.
RANGES = ("observation_rois", "observation_time", "cross_roi_rois", "cross_roi_time", "cross_time_rois",
          "cross_time_time")


def count_range(n: int, bounds) -> range:
    """The values ``int(n * u)`` may take for u drawn in [low, high)."""
    low, high = bounds
    first = int(n * low)
    last = math.ceil(round(n * high, 9)) - 1 if high > low else first
    return range(first, max(first, last) + 1)


@dataclass(frozen=True)
class MaskRanges:
    """The observation block's and the Cross-ROI, Cross-Time and Double-Cross targets' ranges."""

    observation_rois: tuple = (0.84, 1.0)
    observation_time: tuple = (0.84, 1.0)
    cross_roi_rois: tuple = (0.45, 0.6)
    cross_roi_time: tuple = (0.2, 0.6)
    cross_time_rois: tuple = (0.15, 0.3)
    cross_time_time: tuple = (0.0, 0.4)
    edge_fraction: float = 0.3

    @classmethod
    def from_options(cls, options) -> "MaskRanges":
        return cls(**{f.name: tuple(options[f.name]) if f.name in RANGES else float(options[f.name])
                      for f in fields(cls)})

    def edge(self, n_patches: int) -> int:
        """End patches on each side where Cross-Time targets may lie."""
        return int(n_patches * self.edge_fraction + 0.5)  # rounded: 3 of 10 as the reference, 1 of 3 or 4

    def problem(self, n_channels: int, n_patches: int) -> str | None:
        """Why these settings can leave a sample without context or targets (None: they cannot)."""
        for name in RANGES:
            value = getattr(self, name)
            if len(value) != 2 or not 0 <= value[0] <= value[1] <= 1:
                return f"{name} must be [low, high] with 0 <= low <= high <= 1, received {list(value)}"
        if not 0 <= self.edge_fraction <= 0.5:
            return f"edge_fraction must lie in [0, 0.5] (the reference: 0.3), received {self.edge_fraction}"
        if int(n_channels * self.cross_roi_rois[0]) < 1:
            return (f"cross_roi_rois {list(self.cross_roi_rois)} can draw no target ROI of the {n_channels} channels, "
                    f"which leaves samples without targets: raise its low end to at least 1/{n_channels} "
                    "(the reference: [0.45, 0.6])")
        observed = min(count_range(n_channels, self.observation_rois))
        removed = max(count_range(n_channels, self.cross_roi_rois))
        if observed <= removed:
            return (f"observation_rois {list(self.observation_rois)} against cross_roi_rois "
                    f"{list(self.cross_roi_rois)}: the Cross-ROI targets can take all {observed} observed ROIs, "
                    "which leaves an empty context: make observation_rois' low end larger than cross_roi_rois' "
                    "high end (the reference: [0.84, 1.0] and [0.45, 0.6])")
        edge = self.edge(n_patches)
        columns = min(edge, max(count_range(n_patches, self.cross_time_time)))
        for width in {min(max(v, 1), n_patches) for v in count_range(n_patches, self.observation_time)}:
            for start in range(max(n_patches - width, 1)):
                span = range(start, start + width)
                left = sum(p < edge for p in span)
                right = sum(p >= n_patches - edge for p in span)
                if width - min(columns, left) - min(columns, right) < 1:
                    return (f"cross_time_time {list(self.cross_time_time)} with edge_fraction {self.edge_fraction}: "
                            f"the Cross-Time targets can take every observed time patch of {n_patches}, which leaves "
                            "an empty context: lower cross_time_time or edge_fraction, or use more patches")
        return None
