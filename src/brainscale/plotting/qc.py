"""Quality-control figure of the preprocessing stage."""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import pandas as pd

from ..preprocessing.pipeline import exclusion_counts, included_mask
from . import save_figure

__all__ = ["plot_run_qc"]


def plot_run_qc(table: pd.DataFrame, thresholds: dict, output: str | Path) -> None:
    """Mean framewise displacement against usable length per run, excluded runs marked,
    with the exclusion reasons counted beside it."""
    figure, (scatter, bars) = plt.subplots(1, 2, figsize=(11, 4.2), gridspec_kw={"width_ratios": [3, 2]})
    measured = table.dropna(subset=["mean_fd", "n_volumes_out"])
    included_runs = included_mask(measured)
    for included, colour, label in ((True, "tab:blue", "included"), (False, "tab:red", "excluded")):
        subset = measured[included_runs == included]
        scatter.scatter(subset["n_volumes_out"], subset["mean_fd"], s=18, c=colour, label=f"{label} ({len(subset)})")
    scatter.axhline(thresholds["max_mean_fd"], color="grey", linestyle="--", linewidth=1)
    scatter.set_xlabel("volumes after resampling")
    scatter.set_ylabel("mean framewise displacement (mm)")
    scatter.set_title(f"{len(table)} runs, {int(included_mask(table).sum())} included")
    scatter.legend(loc="upper right", fontsize=8)
    counts = exclusion_counts(table)  # empty when no run is excluded
    if len(counts):
        bars.barh(range(len(counts)), counts.to_numpy(), color="tab:red")
        bars.set_yticks(range(len(counts)), [code.replace("_", " ") for code in counts.index], fontsize=8)
        bars.invert_yaxis()
    else:
        bars.text(0.5, 0.5, "no run excluded", ha="center", va="center", transform=bars.transAxes)
        bars.set_yticks([])
    bars.set_xlabel("excluded runs")
    bars.set_title("exclusion reasons")
    figure.tight_layout()
    save_figure(figure, output, dpi=120)
