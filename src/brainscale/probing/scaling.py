"""From per-checkpoint probe metrics to scaling tables: score and gain over random init by size.

The score of a task is its selection metric (balanced accuracy for classes, R2 for continuous
targets) on the test subjects, with the ``cls_avg`` feature of the last layer for encoders
(the reference's protocol). The spread is over pretraining seeds and probe split seeds; the
band is a 95% t-interval of the mean. The gain over random init pairs each pretrained score
with the random-weights model's score on the same split seed (mean over random seeds), in
percentage points. A power law ``gain = a * n^b`` is fitted in log-log space when the mean
gains of at least three sizes are positive; it is reported as fitting when b > 0 and the
log-space R2 is at least 0.5.

``subject_reid`` (top-1 cross-run re-identification) is scored once on the whole probe pool
(``split_seed`` -1), so its spread is over pretraining (and random-init) seeds only. The
``latent_*`` tasks (synthetic data) are the R2 of the simulator's latent traits: ground-truth
recovery. For pretrained rows, ``steps``, ``samples_seen`` and ``passes`` (samples seen over
the subset size) are the means over seeds of what each ``encoder.pt`` export records (NaN for
exports that predate them and for every other family).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import stats

from .probes import SELECTION_METRIC

__all__ = ["collect_metrics", "final_scores", "scaling_table", "fit_power_law", "power_law_table", "layer_table",
           "describe_source", "training_budget", "write_scaling_outputs", "TRAINING_COLUMNS"]

ENCODER_FEATURE = "cls_avg"
TRAINING_COLUMNS = {"steps": "trained_steps", "samples_seen": "samples_seen", "passes": "passes"}


def collect_metrics(entries: list[dict]) -> pd.DataFrame:
    """Concatenate probe metric tables; each entry is ``{"path": metrics.tsv, **columns to add}``."""
    frames = []
    for entry in entries:
        frame = pd.read_csv(entry["path"], sep="\t")
        for key, value in entry.items():
            if key != "path":
                frame[key] = value
        frames.append(frame)
    return pd.concat(frames, ignore_index=True)


def final_scores(metrics: pd.DataFrame) -> pd.DataFrame:
    """One score per row: the task's selection metric, last layer, ``cls_avg`` for encoders."""
    encoder = metrics["feature"] == ENCODER_FEATURE
    baseline = ~metrics["family"].isin(["pretrained", "random", "external"])
    keep = (encoder | baseline) & (metrics["layer"] == metrics["n_layers"])
    return _with_scores(metrics[keep])


def _with_scores(rows: pd.DataFrame) -> pd.DataFrame:
    """``rows`` with ``metric`` (the task kind's selection metric) and ``score`` (that metric's value)."""
    rows = rows.assign(metric=rows["kind"].map(SELECTION_METRIC))
    rows["score"] = np.array([rows.at[index, metric] for index, metric in rows["metric"].items()], dtype=float)
    return rows


def _summary(values) -> dict:
    values = np.asarray(values, dtype=float)
    values = values[np.isfinite(values)]
    mean = values.mean() if len(values) else np.nan
    if len(values) > 1:
        half = stats.t.ppf(0.975, len(values) - 1) * values.std(ddof=1) / np.sqrt(len(values))
    else:
        half = np.nan
    return {"mean": mean, "ci_low": mean - half, "ci_high": mean + half, "n": len(values)}


def scaling_table(metrics: pd.DataFrame, training: pd.DataFrame | None = None) -> pd.DataFrame:
    """Per task and family (size for pretrained models): mean score with its 95% CI, and the gain.

    ``metrics`` holds the columns of :func:`collect_metrics` with ``family`` (pretrained, random,
    connectivity, oracle, external), ``size`` and ``seed`` for pretrained models, ``name`` for
    external checkpoints. ``training`` (optional, :func:`training_budget`) has one row per
    pretrained source with ``size`` and the :data:`TRAINING_COLUMNS`; their means over seeds
    become columns of the pretrained rows (NaN elsewhere).
    """
    scores = final_scores(metrics)
    random = scores[scores["family"] == "random"].groupby(["task", "split_seed"])["score"].mean()
    rows = []
    for (task, family), group in scores.groupby(["task", "family"], sort=True):
        keys = ["size"] if family == "pretrained" else ["name"] if family == "external" else []
        for key, part in (group.groupby(keys) if keys else [(None, group)]):
            row = {"task": task, "kind": part["kind"].iloc[0], "metric": part["metric"].iloc[0], "family": family,
                   "size": key[0] if family == "pretrained" else np.nan,
                   "name": key[0] if family == "external" else family}
            row.update(_summary(part["score"]))
            if family != "random" and len(random):
                reference = random.reindex(list(zip(part["task"], part["split_seed"]))).to_numpy()
                gain = _summary(100 * (part["score"].to_numpy() - reference))
                row.update({f"gain_{k}": v for k, v in gain.items() if k != "n"})
            rows.append(row)
    table = pd.DataFrame(rows)
    for column in ("gain_mean", "gain_ci_low", "gain_ci_high"):
        if column not in table:
            table[column] = np.nan
    for column in TRAINING_COLUMNS:
        table[column] = np.nan
    if training is not None and len(training):
        budget = training.groupby("size")[list(TRAINING_COLUMNS)].mean()
        pretrained = table["family"] == "pretrained"
        for column in TRAINING_COLUMNS:
            table.loc[pretrained, column] = table.loc[pretrained, "size"].map(budget[column]).to_numpy()
    return table.sort_values(["task", "family", "size", "name"], ignore_index=True)


def fit_power_law(sizes, gains) -> dict:
    """Least-squares fit of log(gain) = log(a) + b log(n) on the positive gains."""
    sizes, gains = np.asarray(sizes, dtype=float), np.asarray(gains, dtype=float)
    usable = np.isfinite(gains) & (gains > 0)
    result = {"a": np.nan, "exponent": np.nan, "r2_log": np.nan, "n_points": int(usable.sum()), "fits": False}
    if usable.sum() < 3:
        result["reason"] = "fewer than 3 sizes with a positive mean gain"
        return result
    x, y = np.log(sizes[usable]), np.log(gains[usable])
    slope, intercept = np.polyfit(x, y, 1)
    residual = y - (intercept + slope * x)
    total = ((y - y.mean()) ** 2).sum()
    r2 = 1 - (residual ** 2).sum() / total if total > 0 else np.nan
    fits = bool(slope > 0 and np.isfinite(r2) and r2 >= 0.5)
    result.update(a=float(np.exp(intercept)), exponent=float(slope), r2_log=float(r2), fits=fits,
                  reason="" if fits else "exponent not positive or log-space R2 below 0.5")
    return result


def power_law_table(table: pd.DataFrame) -> pd.DataFrame:
    """One power-law fit of the mean gain against size per task (see :func:`fit_power_law`)."""
    rows = []
    for task, part in table[table["family"] == "pretrained"].groupby("task"):
        rows.append({"task": task, "metric": part["metric"].iloc[0],
                     **fit_power_law(part["size"], part["gain_mean"])})
    return pd.DataFrame(rows)


def layer_table(metrics: pd.DataFrame) -> pd.DataFrame:
    """Per task, layer and encoder (pretrained size or random init): mean score of ``cls_avg`` with CI."""
    encoders = _with_scores(metrics[metrics["family"].isin(["pretrained", "random"]) &
                                    (metrics["feature"] == ENCODER_FEATURE)])
    rows = []
    for (task, family, size, layer), part in encoders.groupby(["task", "family", encoders["size"].fillna(-1),
                                                               "layer"]):
        rows.append({"task": task, "metric": part["metric"].iloc[0], "family": family,
                     "size": size if size >= 0 else np.nan, "layer": layer, **_summary(part["score"])})
    table = pd.DataFrame(rows)
    scored = table.dropna(subset=["mean"])
    best = scored.groupby(["task", "family", scored["size"].fillna(-1)])["mean"].idxmax()
    table["best_layer"] = table.index.isin(best.to_numpy())
    return table


def describe_source(source: str) -> dict:
    """Columns that say what a probe source is: family, model, size, seed, name."""
    kind, _, rest = source.partition("/")
    if kind == "pretrain":
        model, run = rest.split("/")
        size, seed = run.removeprefix("n-").split("_seed-")
        return {"source": source, "family": "pretrained", "model": model, "size": int(size), "seed": int(seed),
                "name": f"{model} n={size}"}
    if kind == "random":
        model, seed = rest.rsplit("_seed-", 1)
        return {"source": source, "family": "random", "model": model, "size": np.nan, "seed": int(seed),
                "name": "random init"}
    if kind == "external":
        return {"source": source, "family": "external", "model": "", "size": np.nan, "seed": np.nan, "name": rest}
    return {"source": source, "family": rest, "model": "", "size": np.nan, "seed": np.nan, "name": rest}


def training_budget(encoder_files, sources) -> pd.DataFrame:
    """Steps, samples seen and passes of each pretrained source, from its ``encoder.pt`` export.

    Parameters
    ----------
    encoder_files : list of paths
        One export per entry of ``sources`` (pretrained sources only).
    sources : list of str
        ``pretrain/<model>/n-<size>_seed-<seed>``.

    Returns
    -------
    DataFrame with source, size, seed and :data:`TRAINING_COLUMNS` (NaN for a key the export lacks;
    ``passes`` falls back to samples_seen / size).
    """
    from ..io import load_torch_file

    rows = []
    for path, source in zip(encoder_files, sources):
        described = describe_source(source)
        if described["family"] != "pretrained":
            raise ValueError(f"training_budget: {source} is not a pretrained source (pretrain/<model>/n-<size>_"
                             "seed-<seed>); pass the encoder.pt of pretrained sources only.")
        payload = load_torch_file(path, ValueError)
        if not isinstance(payload, dict):
            raise ValueError(f"{path}: not a brainscale encoder export (a dict); rerun its pretrain job.")
        row = {"source": source, "size": described["size"], "seed": described["seed"]}
        for column, key in TRAINING_COLUMNS.items():
            value = payload.get(key)
            row[column] = float(value) if value is not None else np.nan
        if np.isnan(row["passes"]) and np.isfinite(row["samples_seen"]):
            row["passes"] = row["samples_seen"] / described["size"]
        rows.append(row)
    return pd.DataFrame(rows, columns=["source", "size", "seed", *TRAINING_COLUMNS])


def write_scaling_outputs(metric_files, sources, outputs: dict, *, encoder_files=(), encoder_sources=(),
                          log=None) -> None:
    """Tables and figures of rule ``scaling_figure`` from the probe metrics of ``sources``.

    ``outputs`` maps scaling_png, scaling_pdf, layerwise_png, layerwise_pdf, metrics, scaling,
    power_law and layerwise to paths. ``encoder_files`` are the ``encoder.pt`` exports of the
    pretrained ``encoder_sources``: their steps, samples seen and passes become columns of the
    scaling table (:func:`training_budget`).
    """
    from ..io import atomic_file
    from ..plotting.scaling import plot_layerwise, plot_scaling

    metrics = collect_metrics([{"path": path, **describe_source(source)} for path, source in
                               zip(metric_files, sources)])
    training = training_budget(list(encoder_files), list(encoder_sources)) if len(encoder_files) else None
    table = scaling_table(metrics, training)
    fits = power_law_table(table)
    layers = layer_table(metrics)
    for key, frame in (("metrics", metrics), ("scaling", table), ("power_law", fits), ("layerwise", layers)):
        with atomic_file(outputs[key]) as temporary:
            frame.to_csv(temporary, sep="\t", index=False, float_format="%.6g")
    plot_scaling(table, fits, [outputs["scaling_png"], outputs["scaling_pdf"]])
    plot_layerwise(layers, [outputs["layerwise_png"], outputs["layerwise_pdf"]])
    if log is not None:
        log(f"{len(metrics)} probe results of {len(sources)} sources summarised")
        reid = table[table["task"] == "subject_reid"]
        for _, row in reid.iterrows():
            size = "" if pd.isna(row["size"]) else f" n={int(row['size'])}"
            log(f"subject_reid of {row['name']}{size}: {row['mean']:.3f}")
