"""Scaling curves (probe score and gain over random init against pretraining-set size),
layer-wise probe scores, and the objectives compared by their gains."""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from . import run_colour, save_figures
from .laws import fit_label

__all__ = ["plot_scaling", "plot_layerwise", "plot_objectives"]

METRIC_NAMES = {"balanced_accuracy": "balanced accuracy", "r2": "R$^2$", "auroc": "AUROC",
                "pearson_r": "Pearson r", "mae": "MAE", "top1": "top-1 re-identification"}
LATENT_PREFIX = "latent_"
TASK_TITLES = {"subject_reid": "subject_reid (cross-run)"}
REFERENCE_STYLES = {"random": dict(color="0.45", linestyle="--", label="random init"),
                    "connectivity": dict(color="tab:green", linestyle=":", label="FC (Fisher z)"),
                    "oracle": dict(color="black", linestyle="-", linewidth=0.8, label="oracle (ground truth)")}


def _band(axis, x, part, prefix, color, label):
    axis.plot(x, part[f"{prefix}mean"], "o-", color=color, label=label, linewidth=1.6, markersize=4)
    axis.fill_between(x, part[f"{prefix}ci_low"], part[f"{prefix}ci_high"], color=color, alpha=0.2, linewidth=0)


def _task_groups(tasks) -> list[tuple[str, list[str]]]:
    """(title, tasks) blocks of the figures: phenotypes and re-identification, then ground-truth latents."""
    latent = [t for t in tasks if t.startswith(LATENT_PREFIX)]
    other = [t for t in tasks if not t.startswith(LATENT_PREFIX)]
    groups = [("Phenotype probes and cross-run subject re-identification", other)] if other else []
    if latent:
        groups.append(("Ground-truth latent recovery: R$^2$ of the simulator's latent traits (synthetic data only)",
                       latent))
    return groups


def _scaling_panels(subfigure, table, fits, tasks) -> None:
    axes = subfigure.subplots(2, len(tasks), squeeze=False, sharex="col")
    for column, task in enumerate(tasks):
        rows = table[table["task"] == task]
        top, bottom = axes[0, column], axes[1, column]
        pretrained = rows[rows["family"] == "pretrained"].sort_values("size")
        sizes = pretrained["size"].to_numpy(dtype=float)
        metric = rows["metric"].iloc[0]
        colour = run_colour(pretrained["model"].iloc[0]) if len(pretrained) else "tab:blue"
        if len(pretrained):
            _band(top, sizes, pretrained, "", colour, str(pretrained["model"].iloc[0]))
            _band(bottom, sizes, pretrained, "gain_", colour, "gain over random init")
        for family, style in REFERENCE_STYLES.items():
            reference = rows[(rows["family"] == family) & rows["mean"].notna()]
            if len(reference):
                top.axhline(reference["mean"].iloc[0], **style)
        for index, (_, external) in enumerate(rows[rows["family"] == "external"].iterrows()):
            if pd.notna(external["mean"]):
                top.axhline(external["mean"], color=f"C{index + 3}", linestyle="-.", label=str(external["name"]))
        bottom.axhline(0, color="0.45", linestyle="--", linewidth=0.8)
        fit = fits[fits["task"] == task] if len(fits) else fits
        if len(fit) and len(sizes):
            fit = fit.iloc[0]
            if fit["identifiable"]:
                grid = np.geomspace(sizes.min(), sizes.max(), 50)
                top.plot(grid, fit["E"] + fit["A"] * grid ** -fit["alpha"], color=colour, linewidth=0.9,
                         linestyle=":")
            bottom.set_title(f"fit: {fit_label(fit)}", fontsize=7)
        top.set_title(TASK_TITLES.get(task, task))
        top.set_ylabel(f"test {METRIC_NAMES.get(metric, metric)}" if metric != "top1" else METRIC_NAMES[metric])
        bottom.set_ylabel("gain over random init (pp)")
        bottom.set_xlabel("pretraining subjects")
        for axis in (top, bottom):
            axis.set_xscale("log")
            if len(sizes):
                axis.set_xticks(sizes, [f"{int(s)}" for s in sizes])
                axis.minorticks_off()
            axis.grid(alpha=0.3)
        if column == 0:  # one legend per block: every panel draws the same lines
            top.legend(fontsize=7, loc="best")


def plot_scaling(table: pd.DataFrame, fits: pd.DataFrame, outputs: list[str | Path]) -> None:
    """Columns: tasks; top row: score against size with baselines as lines; bottom: gain (pp).

    Phenotype tasks and ``subject_reid`` form one block; the ``latent_*`` tasks (ground-truth
    recovery, synthetic data) a second block below, under its own title.
    ``table`` comes from :func:`brainscale.probing.scaling.scaling_table`, ``fits`` (one row per
    task, the subjects axis) from :func:`~brainscale.probing.scaling.probe_scaling_table`: the fitted
    E + A * D^-alpha is drawn dotted where it is identifiable. ``outputs``: files to write.
    """
    groups = _task_groups(sorted(table["task"].unique()))
    width = max(len(tasks) for _, tasks in groups)
    figure = plt.figure(figsize=(3.8 * width, 6.6 * len(groups)), layout="constrained")
    subfigures = np.atleast_1d(figure.subfigures(len(groups), 1))
    for subfigure, (title, tasks) in zip(subfigures, groups):
        _scaling_panels(subfigure, table, fits, tasks)
        subfigure.suptitle(title, fontsize=10, fontweight="bold")
    figure.suptitle("Linear probes of frozen features (mean and 95% bootstrap CI over pretraining seeds and probe "
                    "splits)", fontsize=10)
    save_figures(figure, [str(o) for o in outputs], dpi=150)


def plot_layerwise(table: pd.DataFrame, outputs: list[str | Path]) -> None:
    """Columns: tasks; probe score of each layer for every pretraining size and random init,
    the best layer of each (``best_layer`` of :func:`brainscale.probing.scaling.layer_table`) marked."""
    tasks = [task for _, group in _task_groups(sorted(table["task"].unique())) for task in group]
    n_columns = min(len(tasks), 4)
    n_rows = int(np.ceil(len(tasks) / n_columns))
    figure, axes = plt.subplots(n_rows, n_columns, figsize=(3.8 * n_columns, 3.4 * n_rows), squeeze=False)
    for axis in axes.flat[len(tasks):]:
        axis.set_visible(False)
    sizes = sorted(table.loc[table["family"] == "pretrained", "size"].dropna().unique())
    colours = plt.cm.viridis(np.linspace(0.15, 0.85, max(len(sizes), 1)))
    for axis, task in zip(axes.flat, tasks):
        rows = table[table["task"] == task]
        curves = [("random init", rows[rows["family"] == "random"], "0.45", "--")]
        curves += [(f"n = {int(size)}", rows[(rows["family"] == "pretrained") & (rows["size"] == size)], colour, "-")
                   for size, colour in zip(sizes, colours)]
        for label, part, colour, style in curves:
            if not len(part):
                continue
            part = part.sort_values("layer")  # one row per layer (layer_table)
            axis.plot(part["layer"], part["mean"], style, color=colour, marker="o", markersize=3, label=label)
            best = part[part["best_layer"]]
            axis.plot(best["layer"], best["mean"], "*", color=colour, markersize=11)
        metric = rows["metric"].iloc[0]
        axis.set_title(TASK_TITLES.get(task, task) + (" (ground truth)" if task.startswith(LATENT_PREFIX) else ""))
        axis.set_xlabel("layer")
        axis.set_ylabel(f"test {METRIC_NAMES.get(metric, metric)}")
        axis.set_xticks(sorted(rows["layer"].unique()))
        axis.grid(alpha=0.3)
        axis.legend(fontsize=7)
    figure.suptitle("Layer-wise linear probes (cls_avg; star: best layer)", fontsize=10)
    figure.tight_layout()
    save_figures(figure, [str(o) for o in outputs], dpi=150)


def plot_objectives(table: pd.DataFrame, outputs: list[str | Path]) -> None:
    """Columns: tasks (``subject_reid`` among them, latent tasks in a second block); in each panel one
    row per model, the gain over its own random init at each pretraining size (lighter to darker:
    small to large) with its 95% CI as a horizontal bar, the colour of the model's objective.

    A dot plot rather than 8 overlapping curves: every interval stays visible and the models are
    labelled on the axis. ``table`` comes from :func:`brainscale.probing.scaling.scaling_table`.
    """
    pretrained = table[table["family"] == "pretrained"]
    groups = _task_groups(sorted(table["task"].unique()))
    width = max(len(tasks) for _, tasks in groups)
    models = sorted(pretrained["model"].unique())
    sizes = sorted(pretrained["size"].unique())
    offsets = np.linspace(-0.3, 0.3, len(sizes)) if len(sizes) > 1 else np.zeros(1)
    shades = np.linspace(0.35, 1.0, len(sizes))
    height = 1.3 + 0.55 * len(models)  # per block: each run a row of len(sizes) bars
    figure = plt.figure(figsize=(3.2 * width, height * len(groups) + 1.4), layout="constrained")
    subfigures = np.atleast_1d(figure.subfigures(len(groups), 1))
    for block, (subfigure, (title, tasks)) in enumerate(zip(subfigures, groups)):
        axes = subfigure.subplots(1, len(tasks), squeeze=False, sharey=True)[0]
        for axis, task in zip(axes, tasks):
            rows = pretrained[pretrained["task"] == task]
            for position, model in enumerate(models):
                colour = np.asarray(run_colour(model))
                for offset, shade, size in zip(offsets, shades, sizes):
                    row = rows[(rows["model"] == model) & (rows["size"] == size)]
                    if not len(row) or not np.isfinite(row["gain_mean"].iloc[0]):
                        continue
                    row = row.iloc[0]
                    tint = 1 - shade * (1 - colour)  # lighter for smaller sizes
                    y = position + offset
                    axis.plot([row["gain_ci_low"], row["gain_ci_high"]], [y, y], color=tint, linewidth=2)
                    axis.plot(row["gain_mean"], y, "o", color=tint, markersize=4,
                              markeredgecolor=colour, markeredgewidth=0.6)
            axis.axvline(0, color="0.45", linestyle="--", linewidth=0.8)
            axis.set_yticks(range(len(models)), models, fontsize=8)
            axis.set_ylim(len(models) - 0.5, -0.5)
            axis.set_title(TASK_TITLES.get(task, task), fontsize=9)
            axis.set_xlabel("gain over own random init (pp)", fontsize=8)
            axis.grid(alpha=0.3, axis="x")
        subfigure.suptitle(title, fontsize=10, fontweight="bold")
    grey = np.asarray([0.3, 0.3, 0.3])
    handles = [plt.Line2D([], [], color=1 - shade * (1 - grey), marker="o", linewidth=2, markeredgecolor=grey)
               for shade in shades]
    figure.legend(handles, [f"{int(size)} subjects" for size in sizes], loc="outside lower center",
                  ncol=len(sizes), fontsize=8, title="pretraining set (top to bottom in each row)", title_fontsize=8)
    figure.suptitle("Objectives compared: gain of the frozen features over each run's own random init\n"
                    "(mean and 95% bootstrap CI over pretraining seeds and probe splits)", fontsize=9)
    save_figures(figure, [str(o) for o in outputs], dpi=150)
