"""From per-checkpoint probe metrics to scaling tables: score and gain over random init by size.

The score of a task is its selection metric (balanced accuracy for classes, R2 for continuous
targets) on the test subjects, with the ``cls_avg`` feature of the last layer for encoders (the
reference's protocol). The spread is over pretraining seeds and probe split seeds; the band is a 95%
t-interval of the mean. Encoders are told apart by ``model``, the run name ``objective-size``
(``semantoks-tiny``, ``jepa-tiny``). The gain over random init pairs each pretrained score with the
score of the same model's random weights on the same split seed (mean over random seeds), in
percentage points; baselines and external checkpoints are compared with the random init of the
reference model (the first configured run). A power law ``gain = a * n^b`` is fitted in log-log
space when the mean gains of at least three sizes are positive; it is reported as fitting when b > 0
and the log-space R2 is at least 0.5.

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
           "objectives_table", "describe_source", "training_budget", "write_scaling_outputs", "TRAINING_COLUMNS"]

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


def scaling_table(metrics: pd.DataFrame, training: pd.DataFrame | None = None, *,
                  reference_model: str | None = None) -> pd.DataFrame:
    """Per task and family (model and size for pretrained models): mean score with its 95% CI, and the gain.

    ``metrics`` holds the columns of :func:`collect_metrics` with ``family`` (pretrained, random,
    connectivity, oracle, external), ``model``, ``objective``, ``size`` and ``seed`` for encoders,
    ``name`` for external checkpoints. ``training`` (optional, :func:`training_budget`) has one row
    per pretrained source with ``model``, ``size`` and the :data:`TRAINING_COLUMNS`; their means
    over seeds become columns of the pretrained rows (NaN elsewhere). ``reference_model``: whose
    random init the baselines' gains are measured against (default: the first model in sort order).
    """
    scores = final_scores(metrics)
    scores = scores.assign(model=scores["model"].fillna("").astype(str))
    random_rows = scores[scores["family"] == "random"]
    random = random_rows.groupby(["model", "task", "split_seed"])["score"].mean()
    models = sorted(random_rows["model"].unique())
    reference_model = reference_model if reference_model in models else (models[0] if models else None)
    rows = []
    for (task, family), group in scores.groupby(["task", "family"], sort=True):
        keys = ["model", "size"] if family == "pretrained" else ["model"] if family == "random" else \
            ["name"] if family == "external" else []
        for key, part in (group.groupby(keys) if keys else [(None, group)]):
            model = key[0] if family in ("pretrained", "random") else ""
            row = {"task": task, "kind": part["kind"].iloc[0], "metric": part["metric"].iloc[0], "family": family,
                   "model": model, "objective": part["objective"].iloc[0] if model else "",
                   "size": key[1] if family == "pretrained" else np.nan,
                   "name": key[0] if family == "external" else "random init" if family == "random" else family}
            row.update(_summary(part["score"]))
            against = model if family == "pretrained" else reference_model
            if family != "random" and against is not None and against in models:
                reference = random.reindex([(against, t, s) for t, s in zip(part["task"], part["split_seed"])]
                                           ).to_numpy()
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
        budget = training.groupby(["model", "size"])[list(TRAINING_COLUMNS)].mean()
        pretrained = table["family"] == "pretrained"
        keys = list(zip(table.loc[pretrained, "model"], table.loc[pretrained, "size"]))
        for column in TRAINING_COLUMNS:
            table.loc[pretrained, column] = budget[column].reindex(keys).to_numpy()
    return table.sort_values(["task", "family", "model", "size", "name"], ignore_index=True)


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
    """One power-law fit of the mean gain against size per task and model (see :func:`fit_power_law`)."""
    rows = []
    for (task, model), part in table[table["family"] == "pretrained"].groupby(["task", "model"]):
        rows.append({"task": task, "model": model, "metric": part["metric"].iloc[0],
                     **fit_power_law(part["size"], part["gain_mean"])})
    return pd.DataFrame(rows, columns=["task", "model", "metric", "a", "exponent", "r2_log", "n_points", "fits",
                                       "reason"])


def objectives_table(table: pd.DataFrame) -> pd.DataFrame:
    """The objectives ranked per task at the largest pretraining size every model was trained at.

    Rank 1 has the largest mean gain over its own random init (ties keep the score order);
    ``score_rank`` ranks the raw scores the same way.
    """
    pretrained = table[table["family"] == "pretrained"]
    columns = ["task", "metric", "rank", "model", "objective", "size", "mean", "ci_low", "ci_high", "gain_mean",
               "gain_ci_low", "gain_ci_high", "score_rank", "n"]
    if not len(pretrained):
        return pd.DataFrame(columns=columns)
    common = set.intersection(*(set(part["size"]) for _, part in pretrained.groupby("model")))
    size = max(common) if common else pretrained["size"].max()
    rows = []
    for task, part in pretrained[pretrained["size"] == size].groupby("task"):
        part = part.sort_values(["gain_mean", "mean"], ascending=False, na_position="last")
        part = part.assign(rank=np.arange(1, len(part) + 1),
                           score_rank=part["mean"].rank(ascending=False, method="min").to_numpy())
        rows.append(part)
    return pd.concat(rows, ignore_index=True)[columns]


def layer_table(metrics: pd.DataFrame) -> pd.DataFrame:
    """Per task, layer and encoder (model and pretrained size, or random init): mean score of ``cls_avg`` with CI."""
    encoders = _with_scores(metrics[metrics["family"].isin(["pretrained", "random"]) &
                                    (metrics["feature"] == ENCODER_FEATURE)])
    rows = []
    for (task, family, model, size, layer), part in encoders.groupby(
            ["task", "family", "model", encoders["size"].fillna(-1), "layer"]):
        rows.append({"task": task, "metric": part["metric"].iloc[0], "family": family, "model": model,
                     "size": size if size >= 0 else np.nan, "layer": layer, **_summary(part["score"])})
    table = pd.DataFrame(rows)
    scored = table.dropna(subset=["mean"])
    best = scored.groupby(["task", "family", "model", scored["size"].fillna(-1)])["mean"].idxmax()
    table["best_layer"] = table.index.isin(best.to_numpy())
    return table


def describe_source(source: str) -> dict:
    """Columns that say what a probe source is: family, model, size, seed, name."""
    kind, _, rest = source.partition("/")
    if kind == "pretrain":
        model, run = rest.split("/")
        size, seed = run.removeprefix("n-").split("_seed-")
        return {"source": source, "family": "pretrained", "model": model, "objective": _objective_of(model),
                "size": int(size), "seed": int(seed), "name": f"{model} n={size}"}
    if kind == "random":
        model, seed = rest.rsplit("_seed-", 1)
        return {"source": source, "family": "random", "model": model, "objective": _objective_of(model),
                "size": np.nan, "seed": int(seed), "name": "random init"}
    if kind == "external":
        return {"source": source, "family": "external", "model": "", "objective": "", "size": np.nan,
                "seed": np.nan, "name": rest}
    return {"source": source, "family": rest, "model": "", "objective": "", "size": np.nan, "seed": np.nan,
            "name": rest}


def _objective_of(model: str) -> str:
    """The objective of a run name (``jepa-tiny`` -> ``jepa``); a bare size predates objectives: Brain-Semantoks."""
    return model.partition("-")[0] if "-" in model else "semantoks"


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
        row = {"source": source, "model": described["model"], "size": described["size"], "seed": described["seed"]}
        for column, key in TRAINING_COLUMNS.items():
            value = payload.get(key)
            row[column] = float(value) if value is not None else np.nan
        if np.isnan(row["passes"]) and np.isfinite(row["samples_seen"]):
            row["passes"] = row["samples_seen"] / described["size"]
        rows.append(row)
    return pd.DataFrame(rows, columns=["source", "model", "size", "seed", *TRAINING_COLUMNS])


def write_scaling_outputs(metric_files, sources, outputs: dict, *, encoder_files=(), encoder_sources=(),
                          reference_model: str | None = None, log=None) -> None:
    """Tables and figures of rule ``scaling_figure`` from the probe metrics of ``sources``.

    ``outputs`` maps scaling_png, scaling_pdf, layerwise_png, layerwise_pdf, objectives_png,
    objectives_pdf, metrics, scaling, power_law, layerwise and objectives to paths.
    ``encoder_files`` are the ``encoder.pt`` exports of the pretrained ``encoder_sources``:
    their steps, samples seen and passes become columns of the scaling table
    (:func:`training_budget`). The scaling and layer-wise figures show ``reference_model`` (the
    first configured run; default: the first in sort order), the objectives figure every model.
    """
    from ..io import atomic_file
    from ..plotting.scaling import plot_layerwise, plot_objectives, plot_scaling

    metrics = collect_metrics([{"path": path, **describe_source(source)} for path, source in
                               zip(metric_files, sources)])
    training = training_budget(list(encoder_files), list(encoder_sources)) if len(encoder_files) else None
    table = scaling_table(metrics, training, reference_model=reference_model)
    fits = power_law_table(table)
    layers = layer_table(metrics)
    ranking = objectives_table(table)
    for key, frame in (("metrics", metrics), ("scaling", table), ("power_law", fits), ("layerwise", layers),
                       ("objectives", ranking)):
        with atomic_file(outputs[key]) as temporary:
            frame.to_csv(temporary, sep="\t", index=False, float_format="%.6g")
    shown = reference_model or next(iter(sorted(set(table["model"]) - {""})), "")
    plot_scaling(_one_model(table, shown), fits[fits["model"] == shown],
                 [outputs["scaling_png"], outputs["scaling_pdf"]])
    plot_layerwise(layers[layers["model"] == shown], [outputs["layerwise_png"], outputs["layerwise_pdf"]])
    plot_objectives(table, [outputs["objectives_png"], outputs["objectives_pdf"]])
    if log is not None:
        log(f"{len(metrics)} probe results of {len(sources)} sources summarised")
        reid = table[table["task"] == "subject_reid"]
        for _, row in reid.iterrows():
            size = "" if pd.isna(row["size"]) else f" n={int(row['size'])}"
            model = f" {row['model']}" if row["model"] and row["family"] == "random" else ""
            log(f"subject_reid of {row['name']}{model}{size}: {row['mean']:.3f}")


def _one_model(table: pd.DataFrame, model: str) -> pd.DataFrame:
    """The rows of the scaling figure: ``model``'s pretrained and random-init rows, and every baseline."""
    encoder = table["family"].isin(["pretrained", "random"])
    return table[~encoder | (table["model"] == model)]
