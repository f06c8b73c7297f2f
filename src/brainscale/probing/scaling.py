"""From per-checkpoint probe metrics to scaling tables: score and gain over random init by size.

The score of a task is its selection metric (balanced accuracy for classes, R2 for continuous
targets) on the test subjects, with the ``cls_avg`` feature of the last layer for encoders (the
reference's protocol). The spread is over pretraining seeds and probe split seeds; the band is a 95%
bootstrap interval of the mean that resamples the seeds, then each seed's splits (:func:`_summary`).
Encoders are told apart by ``model``, the run name ``objective-size``
(``semantoks-tiny``, ``jepa-tiny``). The gain over random init pairs each pretrained score with the
score of the same model's random weights on the same split seed (mean over random seeds), in
percentage points; baselines and external checkpoints are compared with the random init of the
reference model (the first configured run). Each model's score against pretraining data is fitted
as E + A * D^-alpha with bootstrap CIs over seeds (:func:`probe_scaling_table`).

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

from .probes import SELECTION_METRIC

__all__ = ["collect_metrics", "final_scores", "scaling_table", "probe_scaling_table", "layer_table",
           "objectives_table", "describe_source", "training_budget", "pretraining_hours", "write_scaling_outputs",
           "TRAINING_COLUMNS"]

ENCODER_FEATURE = "cls_avg"
BOOTSTRAP = 2000  # resamples of every CI of the tables
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
    """One score per row: the task's selection metric, last layer, ``cls_avg`` for encoders.

    An external model with one embedding only (a Brainmarks model such as a connectome: ``cls``,
    no ``cls_avg``) is scored on that embedding.
    """
    encoder = metrics["feature"] == ENCODER_FEATURE
    baseline = ~metrics["family"].isin(["pretrained", "random", "external"])
    external = metrics["family"] == "external"
    single = external & (metrics["feature"] == "cls") & \
        ~metrics["source"].isin(metrics.loc[external & encoder, "source"])
    keep = (encoder | baseline | single) & (metrics["layer"] == metrics["n_layers"])
    return _with_scores(metrics[keep])


def _with_scores(rows: pd.DataFrame) -> pd.DataFrame:
    """``rows`` with ``metric`` (the task kind's selection metric) and ``score`` (that metric's value)."""
    rows = rows.assign(metric=rows["kind"].map(SELECTION_METRIC))
    rows["score"] = np.array([rows.at[index, metric] for index, metric in rows["metric"].items()], dtype=float)
    return rows


def _summary(values, seeds=None, *, n_boot: int = BOOTSTRAP, rng=None) -> dict:
    """Mean of ``values`` with a 95% bootstrap CI over pretraining seeds and, within each, probe splits.

    ``seeds`` labels each value with its pretraining (or random-init) seed; each resample draws the
    seeds with replacement, then each drawn seed's values (its split seeds) with replacement, so the
    CI widens with the spread between seeds as well as between splits. Values without a seed (or
    NaN seeds) form one group: the CI is then over splits only. Also returns ``n`` (values),
    ``n_seeds`` and ``seed_min``/``seed_max``, the lowest and highest mean of one seed. Fewer
    than 3 values get no CI.
    """
    values = np.asarray(values, dtype=float)
    seeds = np.zeros(len(values)) if seeds is None else np.nan_to_num(np.asarray(seeds, dtype=float), nan=-1.0)
    finite = np.isfinite(values)
    values, seeds = values[finite], seeds[finite]
    result = {"mean": np.nan, "ci_low": np.nan, "ci_high": np.nan, "n": len(values), "n_seeds": 0,
              "seed_min": np.nan, "seed_max": np.nan}
    if not len(values):
        return result
    groups = [values[seeds == seed] for seed in np.unique(seeds)]
    seed_means = [group.mean() for group in groups]
    result.update(mean=values.mean(), n_seeds=len(groups), seed_min=min(seed_means), seed_max=max(seed_means))
    if len(values) < 3:  # two values (e.g. one subject_reid per seed of two): their range, not an interval
        return result
    rng = np.random.default_rng(0) if rng is None else rng
    longest = max(len(group) for group in groups)
    padded = np.full((len(groups), longest), np.nan)
    for index, group in enumerate(groups):
        padded[index, :len(group)] = group
    counts = np.array([len(group) for group in groups])
    drawn_seeds = rng.integers(0, len(groups), (n_boot, len(groups)))
    drawn_splits = (rng.random((n_boot, len(groups), longest)) * counts[drawn_seeds][..., None]).astype(int)
    valid = np.arange(longest)[None, None, :] < counts[drawn_seeds][..., None]  # each seed's own count
    resampled = np.where(valid, padded[drawn_seeds[..., None], drawn_splits], np.nan)
    means = np.nanmean(resampled.reshape(n_boot, -1), axis=1)
    result.update(ci_low=float(np.percentile(means, 2.5)), ci_high=float(np.percentile(means, 97.5)))
    return result


def scaling_table(metrics: pd.DataFrame, training: pd.DataFrame | None = None, *,
                  reference_model: str | None = None, n_boot: int = BOOTSTRAP, seed: int = 0) -> pd.DataFrame:
    """Per task and family (model and size for pretrained models): mean score with its 95% CI, and the gain.

    ``metrics`` holds the columns of :func:`collect_metrics` with ``family`` (pretrained, random,
    connectivity, oracle, external), ``model``, ``objective``, ``size`` and ``seed`` for encoders,
    ``name`` for external checkpoints. ``training`` (optional, :func:`training_budget`) has one row
    per pretrained source with ``model``, ``size`` and the :data:`TRAINING_COLUMNS`; their means
    over seeds become columns of the pretrained rows (NaN elsewhere). ``reference_model``: whose
    random init the baselines' gains are measured against (default: the first model in sort order).
    ``n_boot`` and ``seed``: the bootstrap of every CI (:func:`_summary`).

    ``gain_holds_across_seeds`` is true where the gain's CI excludes 0 and every pretraining seed's
    mean gain has the sign of the mean: a finding that survives a rerun with another seed (never
    with a single seed).
    """
    rng = np.random.default_rng(seed)
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
            row.update(_summary(part["score"], part["seed"], n_boot=n_boot, rng=rng))
            against = model if family == "pretrained" else reference_model
            if family != "random" and against is not None and against in models:
                reference = random.reindex([(against, t, s) for t, s in zip(part["task"], part["split_seed"])]
                                           ).to_numpy()
                gain = _summary(100 * (part["score"].to_numpy() - reference), part["seed"], n_boot=n_boot, rng=rng)
                row.update({f"gain_{k}": v for k, v in gain.items() if k not in ("n", "n_seeds")})
            rows.append(row)
    table = pd.DataFrame(rows)
    for column in ("gain_mean", "gain_ci_low", "gain_ci_high", "gain_seed_min", "gain_seed_max"):
        if column not in table:
            table[column] = np.nan
    above = (table["gain_ci_low"] > 0) & (table["gain_seed_min"] > 0)
    below = (table["gain_ci_high"] < 0) & (table["gain_seed_max"] < 0)
    table["gain_holds_across_seeds"] = (table["n_seeds"] >= 2) & (above | below)
    for column in TRAINING_COLUMNS:
        table[column] = np.nan
    if training is not None and len(training):
        budget = training.groupby(["model", "size"])[list(TRAINING_COLUMNS)].mean()
        pretrained = table["family"] == "pretrained"
        keys = list(zip(table.loc[pretrained, "model"], table.loc[pretrained, "size"]))
        for column in TRAINING_COLUMNS:
            table.loc[pretrained, column] = budget[column].reindex(keys).to_numpy()
    return table.sort_values(["task", "family", "model", "size", "name"], ignore_index=True)


def probe_scaling_table(metrics: pd.DataFrame, hours: pd.Series | None = None, *, n_boot: int = 1000,
                        seed: int = 0) -> pd.DataFrame:
    """Per task and model: the probe score against pretraining data fitted as E + A * D^-alpha.

    Each (size, pretraining seed) is one point, its score the mean over probe splits; the fit and
    its bootstrap CIs over seeds are :func:`brainscale.scaling_laws.scaling_law_table` (a score
    improves when it rises: A < 0, E the score with unlimited data). ``hours`` (index (size,
    seed)) adds the fits against hours of data.
    """
    from ..scaling_laws import FIT_COLUMNS, scaling_law_table

    scores = final_scores(metrics)
    pretrained = scores[scores["family"] == "pretrained"]
    columns = ["task", "model", "measure", "axis", *FIT_COLUMNS]
    if not len(pretrained):
        return pd.DataFrame(columns=columns)
    points = pretrained.groupby(["task", "metric", "model", "size", "seed"], as_index=False)["score"].mean()
    points = points.rename(columns={"score": "value"}).astype({"size": int, "seed": int})
    axes = {"size": "subjects"}
    if hours is not None:
        points["hours"] = hours.reindex(list(zip(points["size"], points["seed"]))).to_numpy()
        axes["hours"] = "hours"
    tables = [scaling_law_table(part, measure=metric, direction=1, axes=axes, group=["task", "model"],
                                n_boot=n_boot, seed=seed) for metric, part in points.groupby("metric")]
    return pd.concat(tables, ignore_index=True).sort_values(["task", "model", "axis"], ignore_index=True)[columns]


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


def layer_table(metrics: pd.DataFrame, *, n_boot: int = BOOTSTRAP, seed: int = 0) -> pd.DataFrame:
    """Per task, layer and encoder (model and pretrained size, or random init): mean score of ``cls_avg`` with CI."""
    rng = np.random.default_rng(seed)
    encoders = _with_scores(metrics[metrics["family"].isin(["pretrained", "random"]) &
                                    (metrics["feature"] == ENCODER_FEATURE)])
    rows = []
    for (task, family, model, size, layer), part in encoders.groupby(
            ["task", "family", "model", encoders["size"].fillna(-1), "layer"]):
        rows.append({"task": task, "metric": part["metric"].iloc[0], "family": family, "model": model,
                     "size": size if size >= 0 else np.nan, "layer": layer,
                     **_summary(part["score"], part["seed"], n_boot=n_boot, rng=rng)})
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


def pretraining_hours(sources, shard_folder, splits_dir, repetition_time: float) -> pd.Series:
    """Hours of data of the pretraining subset of each pretrained source (index (size, seed))."""
    from ..scaling_laws import subset_hours

    keys = [(described["size"], described["seed"]) for described in map(describe_source, sources)
            if described["family"] == "pretrained"]
    return subset_hours(shard_folder, splits_dir, repetition_time, keys)


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
                          reference_model: str | None = None, hours: pd.Series | None = None, n_boot: int = BOOTSTRAP,
                          seed: int = 0, log=None) -> None:
    """Tables and figures of rule ``scaling_figure`` from the probe metrics of ``sources``.

    ``outputs`` maps scaling_png, scaling_pdf, layerwise_png, layerwise_pdf, objectives_png,
    objectives_pdf, metrics, scaling, probe_scaling, layerwise and objectives to paths.
    ``encoder_files`` are the ``encoder.pt`` exports of the pretrained ``encoder_sources``:
    their steps, samples seen and passes become columns of the scaling table
    (:func:`training_budget`). The scaling and layer-wise figures show ``reference_model`` (the
    first configured run; default: the first in sort order), the objectives figure every model.
    ``hours``: hours of data of each pretraining subset (index (size, seed)), a second axis of the
    probe fits. ``n_boot`` and ``seed``: the bootstraps of the CIs.
    """
    from ..io import atomic_file
    from ..plotting.scaling import plot_layerwise, plot_objectives, plot_scaling

    metrics = collect_metrics([{"path": path, **describe_source(source)} for path, source in
                               zip(metric_files, sources)])
    training = training_budget(list(encoder_files), list(encoder_sources)) if len(encoder_files) else None
    table = scaling_table(metrics, training, reference_model=reference_model, n_boot=n_boot, seed=seed)
    fits = probe_scaling_table(metrics, hours, n_boot=n_boot, seed=seed)
    layers = layer_table(metrics, n_boot=n_boot, seed=seed)
    ranking = objectives_table(table)
    for key, frame in (("metrics", metrics), ("scaling", table), ("probe_scaling", fits), ("layerwise", layers),
                       ("objectives", ranking)):
        with atomic_file(outputs[key]) as temporary:
            frame.to_csv(temporary, sep="\t", index=False, float_format="%.6g")
    shown = reference_model or next(iter(sorted(set(table["model"]) - {""})), "")
    plot_scaling(_one_model(table, shown), fits[(fits["model"] == shown) & (fits["axis"] == "subjects")],
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
