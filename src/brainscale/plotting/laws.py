"""The held-out objective loss against pretraining data, with the fitted E + A * D^-alpha."""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from . import objective_colour, save_figures

__all__ = ["plot_loss_scaling", "fit_label"]

PANELS_PER_ROW = 4  # objectives side by side; more wrap to another row


def fit_label(fit: pd.Series) -> str:
    """``alpha 0.41 [0.2, 0.7], E -3.1`` for an identifiable fit, else the reason it is not."""
    if not fit["identifiable"] and fit["reason"]:
        return str(fit["reason"]).split(":")[0]
    text = f"α {fit['alpha']:.2f}"
    if np.isfinite(fit["alpha_ci_low"]):
        text += f" [{fit['alpha_ci_low']:.2f}, {fit['alpha_ci_high']:.2f}]"
    return text + f", E {fit['E']:.3g}"


def plot_loss_scaling(points: pd.DataFrame, fits: pd.DataFrame, outputs: list[str | Path]) -> None:
    """One column per objective, four to a row (a line per model size: the N x D grid).

    Top: final held-out loss (filled) and loss on the run's own subset (hollow) against
    pretraining subjects, each seed a small point, the mean per size a larger one, the fitted
    curve and its E (dashed). Bottom: the reducible loss L - E on log-log axes, where the power
    law is a straight line (only for identifiable fits).

    ``points``: :func:`brainscale.scaling_laws.final_losses` rows with ``hours``; ``fits``: the
    ``loss_scaling`` table (:func:`brainscale.scaling_laws.scaling_law_table`).
    """
    objectives = list(dict.fromkeys(points.sort_values(["objective", "parameters"])["objective"]))
    columns = min(max(len(objectives), 1), PANELS_PER_ROW)
    blocks = -(-max(len(objectives), 1) // columns)  # a block (loss above, L - E below) per row of objectives
    figure, axes = plt.subplots(2 * blocks, columns, figsize=(4.4 * columns, 7.2 * blocks), squeeze=False,
                                height_ratios=(3, 2) * blocks)
    for index in range(blocks * columns):
        top, bottom = axes[2 * (index // columns), index % columns], axes[2 * (index // columns) + 1, index % columns]
        if index < len(objectives):
            objective = objectives[index]
            _objective_panels(top, bottom, objective, points[points["objective"] == objective], fits)
        else:  # an empty place of the last row
            top.set_visible(False)
            bottom.set_visible(False)
    figure.suptitle("Held-out objective loss against pretraining data: L(D) = E + A·D$^{-α}$ "
                    "(small points: seeds; α with its 95% bootstrap CI over seeds)", fontsize=10)
    figure.tight_layout()
    save_figures(figure, [str(o) for o in outputs], dpi=150)


def _objective_panels(top, bottom, objective: str, rows: pd.DataFrame, fits: pd.DataFrame) -> None:
    """The two panels of one objective: its runs' losses and fits (top), the reducible loss (bottom)."""
    drawn_bottom, labels = False, []  # the fits' summaries, written in the bottom panel
    for model, part in rows.groupby("model", sort=False):
        colour = objective_colour(objective, part["model_size"].iloc[0])
        means = part.groupby("size")[["val_loss", "seen_loss"]].mean()
        top.plot(part["size"], part["val_loss"], "o", color=colour, markersize=3, alpha=0.5)
        top.plot(means.index, means["val_loss"], "o", color=colour, markersize=6, label=f"{model} held-out")
        top.plot(means.index, means["seen_loss"], "s--", color=colour, markersize=5, markerfacecolor="none",
                 linewidth=0.8, label=f"{model} own subset")
        fit = fits[(fits["model"] == model) & (fits["axis"] == "subjects")]
        if not len(fit):
            continue
        fit = fit.iloc[0]
        grid = np.geomspace(part["size"].min(), part["size"].max(), 60)
        if np.isfinite(fit["A"]) and fit["improves"]:
            top.plot(grid, fit["E"] + fit["A"] * grid ** -fit["alpha"], "-", color=colour, linewidth=1.4)
            top.axhline(fit["E"], color=colour, linestyle=":", linewidth=1)
        labels.append((f"{model}: {fit_label(fit)}", colour))
        if fit["identifiable"]:
            reducible = part["val_loss"] - fit["E"]
            keep = reducible > 0
            bottom.plot(part.loc[keep, "size"], reducible[keep], "o", color=colour, markersize=3, alpha=0.6)
            bottom.plot(grid, fit["A"] * grid ** -fit["alpha"], "-", color=colour, linewidth=1.4)
            drawn_bottom = True
    sizes = sorted(rows["size"].unique())
    for axis in (top, bottom):
        axis.set_xscale("log")
        axis.set_xlim(sizes[0] / 1.3, sizes[-1] * 1.3)
        axis.set_xticks(sizes, [str(int(size)) for size in sizes])
        axis.minorticks_off()
        axis.grid(alpha=0.3)
        axis.set_xlabel("pretraining subjects")
    top.set_title(objective, fontsize=10)
    top.set_ylabel("objective loss (final checkpoint)")
    top.legend(fontsize=7, loc="best")
    if drawn_bottom:
        bottom.set_yscale("log")
        bottom.set_ylabel("reducible held-out loss L − E")
    else:
        bottom.set_yticks([])
        labels.append(("no identifiable fit (reasons in loss_scaling.tsv)", "grey"))
    for index, (text, colour) in enumerate(labels):
        bottom.text(0.03, 0.05 + 0.09 * index, text, transform=bottom.transAxes, fontsize=7, color=colour)
