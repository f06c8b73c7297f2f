"""Quality-control figure of the preprocessing stage."""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import pandas as pd

from . import save_figure

__all__ = ["plot_run_qc"]


def plot_run_qc(table: pd.DataFrame, thresholds: dict, output: str | Path) -> None:
    """Mean framewise displacement against usable length per run, excluded runs marked,
    with the exclusion reasons counted beside it."""
    figure, (scatter, bars) = plt.subplots(1, 2, figsize=(11, 4.2), gridspec_kw={"width_ratios": [3, 2]})
    measured = table.dropna(subset=["mean_fd", "n_volumes_out"])
    for included, colour, label in ((True, "tab:blue", "included"), (False, "tab:red", "excluded")):
        subset = measured[measured["included"] == included]
        scatter.scatter(subset["n_volumes_out"], subset["mean_fd"], s=18, c=colour, label=f"{label} ({len(subset)})")
    scatter.axhline(thresholds["max_mean_fd"], color="grey", linestyle="--", linewidth=1)
    scatter.set_xlabel("volumes after resampling")
    scatter.set_ylabel("mean framewise displacement (mm)")
    scatter.set_title(f"{len(table)} runs, {int(table['included'].sum())} included")
    scatter.legend(loc="upper right", fontsize=8)
    codes = table.loc[~table["included"].astype(bool), "exclusion"].fillna("").str.split(",").explode()
    counts = codes[codes != ""].str.replace("_", " ").value_counts()
    if len(counts):
        bars.barh(range(len(counts)), counts.to_numpy(), color="tab:red")
        bars.set_yticks(range(len(counts)), counts.index, fontsize=8)
        bars.invert_yaxis()
    bars.set_xlabel("excluded runs")
    bars.set_title("exclusion reasons")
    figure.tight_layout()
    save_figure(figure, output, dpi=120)
