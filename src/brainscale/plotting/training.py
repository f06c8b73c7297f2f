"""Loss curves and collapse monitors of a pretraining run."""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import pandas as pd

from . import save_figure

__all__ = ["plot_loss_curve"]


def plot_loss_curve(log_csv: str | Path, output: str | Path) -> None:
    """Losses against samples seen (learning rate on a second axis) above the collapse monitors."""
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
