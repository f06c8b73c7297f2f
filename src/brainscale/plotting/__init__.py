"""Figures of the workflow (matplotlib, no display needed)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from ..io import atomic_file  # noqa: E402

__all__ = ["save_figure", "save_figures", "objective_colour", "run_colour", "OBJECTIVE_ORDER", "SIZE_SHADES"]


def save_figure(figure, output: str | Path, dpi: int = 120) -> None:
    """Save through a temporary name and a rename, then close the figure."""
    with atomic_file(output) as temporary:
        figure.savefig(temporary, dpi=dpi)
    plt.close(figure)


def save_figures(figure, outputs, dpi: int = 120) -> None:
    """One figure in several formats (PNG, PDF, ...), each written atomically; then close it."""
    for output in outputs:
        with atomic_file(output) as temporary:
            figure.savefig(temporary, dpi=dpi)
    plt.close(figure)


# One colour per objective in every figure: the objectives of brainscale in a fixed order on the
# tab10 palette; an objective from a plugin takes the next free colour by the sort order of its name.
OBJECTIVE_ORDER = ["semantoks", "netbert", "autoencoder", "jepa", "mae", "csm", "seqbert", "shuffled"]
SIZE_SHADES = {"tiny": 1.0, "small": 0.7, "base": 0.45}  # darker for larger model sizes


def objective_colour(objective: str, model_size: str | None = None):
    """The colour of ``objective`` (RGB), darkened for a larger ``model_size`` (tiny, small, base)."""
    import numpy as np

    palette = plt.get_cmap("tab10").colors
    if objective in OBJECTIVE_ORDER:
        index = OBJECTIVE_ORDER.index(objective)
    else:
        index = len(OBJECTIVE_ORDER) + sum(ord(c) for c in objective) % (len(palette) - len(OBJECTIVE_ORDER))
    colour = np.asarray(palette[index % len(palette)])
    return tuple(colour * SIZE_SHADES.get(model_size or "tiny", 0.85))


def run_colour(run: str):
    """The colour of a run ``objective-size`` (``semantoks-tiny``): its objective's, shaded for its size."""
    objective, _, model_size = str(run).partition("-")
    return objective_colour(objective, model_size or None)
