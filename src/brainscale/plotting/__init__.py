"""Figures of the workflow (matplotlib, no display needed)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from ..io import atomic_file  # noqa: E402

__all__ = ["save_figure", "save_figures"]


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
