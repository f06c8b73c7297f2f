"""Loss curves and collapse monitors of a pretraining run."""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import pandas as pd

from . import save_figure, save_figures

__all__ = ["plot_loss_curve", "plot_learning_curves"]


def plot_loss_curve(log_csv: str | Path, output: str | Path) -> None:
    """Losses against samples seen (learning rate on a second axis) above the collapse monitors; the
    held-out loss and the same loss on the subset (``val_loss``, ``seen_loss``) where they were scored."""
    log = pd.read_csv(log_csv)
    figure, (axis, monitor) = plt.subplots(2, 1, figsize=(7, 6), sharex=True, height_ratios=(3, 2))
    x = log["samples_seen"]
    columns = list(log.columns)
    terms = columns[columns.index("loss") + 1:columns.index("lr")]  # the objective's loss terms
    axis.plot(x, log["loss"], "-", label="loss", linewidth=1.2)
    for term, style in zip(terms, ("--", ":", "-.", "--", ":")):
        if log[term].isna().any():  # a term that applies to some steps only (Brain-Semantoks' mask term)
            applied = log.dropna(subset=[term])
            axis.plot(applied["samples_seen"], applied[term], ".", markersize=3, label=term)
        else:
            axis.plot(x, log[term], style, label=term, linewidth=1.2)
    for column, marker, label in (("seen_loss", "s", "loss on the subset (fixed crops)"),
                                  ("val_loss", "o", "held-out loss (evaluation subjects)")):
        if column in log and log[column].notna().any():
            scored = log.dropna(subset=[column])
            axis.plot(scored["samples_seen"], scored[column], marker + "-", markersize=5, linewidth=1.5,
                      label=label)
    axis.set_ylabel("loss")
    axis.legend(loc="upper right", fontsize=8)
    rate = axis.twinx()
    rate.plot(x, log["lr"], color="grey", alpha=0.4, linewidth=1)
    rate.set_ylabel("learning rate", color="grey")
    measured = log.dropna(subset=["cls_rank"])
    monitor.plot(measured["samples_seen"], measured["cls_std"], "o-", markersize=3, color="tab:purple",
                 label="CLS spread (std x sqrt(D); 0 = collapse)")
    monitor.set_ylabel("CLS spread", color="tab:purple")
    monitor.set_ylim(bottom=0)
    rank = monitor.twinx()
    rank.plot(measured["samples_seen"], measured["cls_rank"], "s-", markersize=3, color="tab:green",
              label="effective rank")
    rank.set_ylabel("effective rank of CLS", color="tab:green")
    rank.set_ylim(bottom=0)
    monitor.set_xlabel(f"samples seen ({log['passes'].iloc[-1]:.1f} passes over the subset)" if len(log)
                       else "samples seen")
    monitor.set_title("collapse monitors of the exported encoder's CLS (batch)", fontsize=9)
    figure.tight_layout()
    save_figure(figure, output, dpi=110)


def plot_learning_curves(logs: dict, outputs) -> None:
    """Held-out loss (solid, circles) and the same loss on the run's own subset (dashed, squares) against
    samples seen: one panel per run (at most four a row), one colour per pretraining-set size (a line per
    seed), one legend for the figure.

    ``logs``: ``{(run, size, seed): log.csv path}``; ``outputs``: the paths to write (PNG, PDF).
    """
    import numpy as np
    from matplotlib.lines import Line2D

    runs = sorted({run for run, _, _ in logs})
    sizes = sorted({int(size) for _, size, _ in logs})
    colours = dict(zip(sizes, plt.cm.viridis(np.linspace(0.1, 0.85, len(sizes)))))
    columns = min(len(runs), 4)
    rows = -(-len(runs) // columns)
    height = 3.4 * rows + 0.8  # inches: the panels, the title and the legend below them
    figure, axes = plt.subplots(rows, columns, figsize=(4.2 * columns, height), squeeze=False)
    for axis, run in zip(axes.flat, runs):
        scored_any = False
        for (name, size, _), path in sorted(logs.items()):
            log = pd.read_csv(path) if name == run else None
            if log is None or "val_loss" not in log or log["val_loss"].isna().all():
                continue
            scored, colour = log.dropna(subset=["val_loss"]), colours[int(size)]
            axis.plot(scored["samples_seen"], scored["val_loss"], "o-", color=colour, markersize=4)
            axis.plot(scored["samples_seen"], scored["seen_loss"], "s--", color=colour, markersize=3, alpha=0.7)
            scored_any = True
        axis.set_title(run, fontsize=10)
        axis.set_xlabel("samples seen")
        if not scored_any:
            axis.text(0.5, 0.5, "no held-out loss in log.csv\n(pretrain.evaluation)", ha="center", va="center",
                      transform=axis.transAxes, fontsize=8, color="grey")
    for axis in axes.flat[len(runs):]:
        axis.set_visible(False)
    for row in axes:
        row[0].set_ylabel("objective loss")
    handles = [Line2D([], [], color=colours[size], linewidth=2, label=f"{size} subjects") for size in sizes]
    handles += [Line2D([], [], color="grey", marker="o", linestyle="-", label="held-out subjects"),
                Line2D([], [], color="grey", marker="s", linestyle="--", alpha=0.7, label="the run's own subset")]
    figure.legend(handles=handles, loc="lower center", ncol=len(handles), fontsize=8, frameon=False,
                  title="pretraining set (colour) and the crops scored (line)", title_fontsize=8)
    figure.suptitle("Learning curves: the objective loss on held-out subjects and on the run's own subset",
                    fontsize=10)
    figure.tight_layout(rect=(0, 0.6 / height, 1, 1))  # the legend's 0.6 inch at the bottom
    save_figures(figure, outputs)
