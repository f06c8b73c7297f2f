"""Loss curves of a pretraining run."""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import pandas as pd

from . import save_figure

__all__ = ["plot_loss_curve"]


def plot_loss_curve(log_csv: str | Path, output: str | Path) -> None:
    """Total and per-term losses against step, with the learning rate on a second axis."""
    log = pd.read_csv(log_csv)
    figure, axis = plt.subplots(figsize=(7, 4))
    for column, style in (("loss", "-"), ("cls", "--"), ("network", ":")):
        axis.plot(log["step"], log[column], style, label=column, linewidth=1.2)
    masked = log.dropna(subset=["mask"])  # the masked-token term applies to some steps only
    axis.plot(masked["step"], masked["mask"], ".", markersize=3, label="mask")
    axis.set_xlabel("step")
    axis.set_ylabel("loss")
    axis.legend(loc="upper right", fontsize=8)
    rate = axis.twinx()
    rate.plot(log["step"], log["lr"], color="grey", alpha=0.4, linewidth=1)
    rate.set_ylabel("learning rate", color="grey")
    figure.tight_layout()
    save_figure(figure, output, dpi=110)
