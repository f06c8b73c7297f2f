"""Data-scaling laws: y(D) = E + A * D^-alpha fitted per run, with bootstrap CIs over pretraining seeds.

D is the pretraining-set size (subjects, or hours of data), y the held-out objective loss of the
final checkpoint (``val_loss`` of ``log.csv``) or a probe score. E is the irreducible term (the
loss with unlimited data at this compute and model size), A the part that data removes, alpha how
fast it goes. A loss that falls with data has A > 0, a probe score that rises A < 0: ``direction``
says which is the improvement, and a fit whose curve goes the other way (or is flat) has alpha 0,
"no gain from data". So "the CI of alpha excludes 0" reads: in at least 97.5% of the bootstrap
resamples the fitted curve improves with data.

The fit is exact least squares: for a fixed alpha the model is linear in (E, A), so alpha is
found by a grid search over :data:`ALPHA_RANGE`, refined in the best bracket; it needs no starting
point and cannot diverge. A best alpha on the edge of the range is not identifiable
from these sizes (the curve is still straight in log D, or bends too sharply to measure): the
estimate at the edge is kept, marked not identifiable, with that reason. So is a point fit whose
bootstrap CI of alpha includes 0 or reaches an edge of the range, and, with one seed per size (no
CI), a fit whose curve explains less than half of the points' variance (:data:`MIN_R2`; a curve
through a flat, noisy loss can fall with alpha inside the range).

The bootstrap resamples, at each size, the seeds with replacement (each seed is its own subset
and initialisation), and refits; the CIs are the 2.5 and 97.5 percentiles of the refits.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

__all__ = ["fit_saturating_power_law", "bootstrap_fit", "scaling_law_table", "final_losses", "subset_hours",
           "encoder_parameters", "write_loss_scaling", "ALPHA_RANGE", "FIT_COLUMNS"]

ALPHA_RANGE = (0.01, 3.0)
MIN_SIZES = 3
MIN_R2 = 0.5  # with one seed: a curve that explains less of the points than their scatter measures no exponent
FIT_COLUMNS = ["E", "E_ci_low", "E_ci_high", "A", "alpha", "alpha_ci_low", "alpha_ci_high", "r2", "n_sizes",
               "n_seeds", "n_points", "n_boot", "improves", "identifiable", "reason"]


def _linear_given_alpha(x: np.ndarray, y: np.ndarray, alphas: np.ndarray):
    """Per alpha of ``alphas``: (E, A, residual sum of squares) of the least-squares fit of y = E + A x^-alpha.

    For a fixed alpha it is the simple regression of y on z = x^-alpha, in closed form for every alpha at once.
    """
    z = x[None, :] ** -alphas[:, None]  # (alphas, points)
    z_centred = z - z.mean(axis=1, keepdims=True)
    y_centred = y - y.mean()
    variance = (z_centred ** 2).sum(axis=1)
    slope = np.divide(z_centred @ y_centred, variance, out=np.zeros_like(variance), where=variance > 0)
    intercept = y.mean() - slope * z.mean(axis=1)
    error = (y_centred ** 2).sum() - slope * (z_centred @ y_centred)
    return intercept, slope, np.maximum(error, 0.0)


def fit_saturating_power_law(sizes, values, *, direction: int = -1) -> dict:
    """Least-squares fit of ``values = E + A * sizes^-alpha``.

    Parameters
    ----------
    sizes, values : 1-D arrays of equal length
        Every (size, value) point; several points per size (seeds) are allowed.
    direction : {-1, 1}, default=-1
        -1 when lower is better (a loss: improving means A > 0), 1 when higher is better (a score).

    Returns
    -------
    dict with E, A, alpha, r2 (of the points), improves (the fitted curve improves with D) and
    reason (empty when the fit is identifiable). alpha is 0 and E the mean when it does not improve.
    """
    x, y = np.asarray(sizes, dtype=float), np.asarray(values, dtype=float)
    usable = np.isfinite(x) & np.isfinite(y) & (x > 0)
    x, y = x[usable], y[usable]
    n_sizes = len(np.unique(x))
    result = {"E": np.nan, "A": np.nan, "alpha": np.nan, "r2": np.nan, "improves": False, "identifiable": False,
              "n_sizes": n_sizes, "n_points": len(x)}
    if not len(x):
        return {**result, "reason": "no finite value at any size (e.g. a score undefined on too few test subjects)"}
    if n_sizes < MIN_SIZES:
        return {**result, "reason": f"{n_sizes} pretraining size(s); E + A*D^-alpha has 3 parameters and needs at "
                                    f"least {MIN_SIZES} sizes"}
    scale = x.min()  # fit on D / D_min: the same alpha, an A of the size of the values
    x = x / scale
    total = float(((y - y.mean()) ** 2).sum())
    if total <= 1e-12 * max(1.0, float(np.abs(y).max())) ** 2:
        return {**result, "E": float(y.mean()), "alpha": 0.0, "reason": "flat: every value is the same"}
    grid = np.geomspace(*ALPHA_RANGE, 60)
    best = int(np.argmin(_linear_given_alpha(x, y, grid)[2]))
    alpha = grid[best]
    low, high = grid[max(best - 1, 0)], grid[min(best + 1, len(grid) - 1)]
    for _ in range(3):  # refine inside the bracket: each pass narrows it twentyfold
        fine = np.geomspace(low, high, 41)
        index = int(np.argmin(_linear_given_alpha(x, y, fine)[2]))
        alpha, low, high = fine[index], fine[max(index - 1, 0)], fine[min(index + 1, len(fine) - 1)]
    E, A, error = (float(value[0]) for value in _linear_given_alpha(x, y, np.array([alpha])))
    alpha = float(alpha)
    A = float(A * scale ** alpha)  # back to D in its own unit: A (D/scale)^-alpha = A scale^alpha D^-alpha
    improves = bool(-direction * A > 0)
    result.update(r2=1 - error / total, improves=improves)
    if not improves:
        return {**result, "E": float(y.mean()), "alpha": 0.0,
                "reason": "no gain from data: the fitted curve " + ("rises" if direction < 0 else "falls")}
    result.update(E=E, A=A, alpha=alpha)
    if best in (0, len(grid) - 1):
        edge = "straight in log D (alpha at the lower end)" if best == 0 else "a step (alpha at the upper end)"
        return {**result, "reason": f"alpha not identifiable from these sizes: the curve is {edge} of "
                                    f"[{ALPHA_RANGE[0]}, {ALPHA_RANGE[1]}]"}
    caution = f"{MIN_SIZES} sizes for 3 parameters: the curve is not tested, only fitted" if n_sizes == MIN_SIZES \
        else ""
    return {**result, "identifiable": True, "reason": caution}


def bootstrap_fit(points: pd.DataFrame, *, x: str = "size", y: str = "value", direction: int = -1,
                  n_boot: int = 1000, seed: int = 0) -> dict:
    """:func:`fit_saturating_power_law` on ``points`` with percentile CIs from resampling the seeds per size.

    ``points`` has one row per (size, seed): ``size``, ``seed``, ``y`` and the data axis ``x``
    (``size`` itself, or e.g. the hours of each subset, which differ between seeds of a size).
    Returns the fit of all the points with ``E_ci_*``, ``alpha_ci_*`` (NaN with one seed per
    size), ``n_seeds`` (the fewest seeds of a size) and ``n_boot``.
    """
    points = points[np.isfinite(points[y].to_numpy(dtype=float))]
    fit = fit_saturating_power_law(points[x], points[y], direction=direction)
    seeds_per_size = points.groupby("size")["seed"].nunique()
    n_seeds = int(seeds_per_size.min()) if len(seeds_per_size) else 0
    # sizes, not distinct x values: on the hours axis every seed's subset has hours of its own
    result = {**fit, "n_sizes": len(seeds_per_size), "n_seeds": n_seeds, "n_boot": 0, "E_ci_low": np.nan,
              "E_ci_high": np.nan, "alpha_ci_low": np.nan, "alpha_ci_high": np.nan}
    if fit["n_sizes"] < MIN_SIZES or "flat" in fit["reason"]:
        return result
    if seeds_per_size.max() < 2:
        if result["identifiable"] and result["r2"] < MIN_R2:  # no CI to reject a curve through scatter
            result.update(identifiable=False, reason=f"the curve explains {result['r2']:.0%} of the points' "
                          f"variance (under {MIN_R2:.0%}): too little trend with data to measure an exponent")
        result["reason"] = (result["reason"] + "; " if result["reason"] else "") + \
            "one pretraining seed per size: no bootstrap CI (set splits.pretrain_seeds to 2 or more)"
        return result
    rng = np.random.default_rng(seed)
    x_values, y_values = points[x].to_numpy(dtype=float), points[y].to_numpy(dtype=float)
    groups = [np.flatnonzero(points["size"].to_numpy() == size) for size in seeds_per_size.index]
    alphas, intercepts = [], []
    for _ in range(n_boot):
        sample = np.concatenate([members[rng.integers(0, len(members), len(members))] for members in groups])
        refit = fit_saturating_power_law(x_values[sample], y_values[sample], direction=direction)
        alphas.append(refit["alpha"])
        intercepts.append(refit["E"])
    alphas, intercepts = np.asarray(alphas, dtype=float), np.asarray(intercepts, dtype=float)
    result.update(n_boot=n_boot, alpha_ci_low=float(np.nanpercentile(alphas, 2.5)),
                  alpha_ci_high=float(np.nanpercentile(alphas, 97.5)),
                  E_ci_low=float(np.nanpercentile(intercepts, 2.5)),
                  E_ci_high=float(np.nanpercentile(intercepts, 97.5)))
    if result["identifiable"]:  # a point fit the seeds do not support is not a measured exponent
        if result["alpha_ci_low"] <= 0:
            result.update(identifiable=False, reason="alpha's CI includes 0: in more than 2.5% of the resamples of "
                                                     "the seeds the curve does not improve with data")
        elif result["alpha_ci_low"] <= ALPHA_RANGE[0] * 1.001 or result["alpha_ci_high"] >= ALPHA_RANGE[1] * 0.999:
            result.update(identifiable=False, reason=f"alpha's CI reaches the edge of [{ALPHA_RANGE[0]}, "
                                                     f"{ALPHA_RANGE[1]}]: the seeds do not pin it down")
    return result


def final_losses(log_files, keys) -> pd.DataFrame:
    """The held-out and own-subset loss of each run's last scoring: one row per (model, size, seed) of ``keys``.

    Parameters
    ----------
    log_files : list of paths
        ``log.csv`` of each run, in the order of ``keys``.
    keys : list of (model, size, seed)

    Returns
    -------
    DataFrame with model, objective, model_size, size, seed, val_loss, seen_loss (the gap's other
    side) and samples_seen of that row; NaN losses for a log without them (written before the
    held-out loss existed, or with ``pretrain.evaluation`` off).
    """
    rows = []
    for path, (model, size, seed) in zip(log_files, keys):
        log = pd.read_csv(path)
        scored = log[np.isfinite(log["val_loss"])] if "val_loss" in log else log.iloc[:0]
        last = scored.iloc[-1] if len(scored) else None
        objective, _, model_size = str(model).partition("-")
        rows.append({"model": model, "objective": objective, "model_size": model_size, "size": int(size),
                     "seed": int(seed),
                     **{column: float(last[column]) if last is not None and column in last else np.nan
                        for column in ("val_loss", "seen_loss", "samples_seen")}})
    return pd.DataFrame(rows, columns=["model", "objective", "model_size", "size", "seed", "val_loss", "seen_loss",
                                       "samples_seen"])


def subset_hours(shard_folder, splits_dir, repetition_time: float, keys) -> pd.Series:
    """Hours of data of each pretraining subset: the sum of its subjects' hours in the shards (index: (size, seed)).

    ``keys`` are (size, seed) pairs; the subsets are ``pretrain_n-<size>_seed-<seed>.npy`` of
    ``splits_dir``; ``repetition_time`` is the shards' TR in seconds (``preprocess.target_tr``).
    """
    from pathlib import Path

    from .shards.reader import shard_paths, subject_hours
    from .shards.splits import subset_name

    hours = subject_hours(shard_paths(shard_folder), repetition_time)
    totals = {}
    for size, seed in sorted(set((int(size), int(seed)) for size, seed in keys)):
        path = Path(splits_dir) / f"{subset_name(size, seed)}.npy"
        if not path.is_file():
            raise FileNotFoundError(f"{path}: no such pretraining subset; rerun rule make_splits.")
        subjects = np.load(path, allow_pickle=False).astype(str)
        missing = sorted(set(subjects) - set(hours.index))
        if missing:
            raise ValueError(f"{path}: {len(missing)} subjects are not in the shards (e.g. {missing[:3]}); the splits "
                             "and shards come from different runs. Rerun rules build_shards and make_splits.")
        totals[(size, seed)] = float(hours.loc[subjects].sum())
    return pd.Series(totals, name="hours", dtype=float)


def encoder_parameters(encoder_files) -> list[int]:
    """Parameters of each ``encoder.pt`` export (the encoder the probes read, without training heads): N."""
    from .io import load_torch_file

    counts = []
    for path in encoder_files:
        payload = load_torch_file(path, ValueError)
        if not isinstance(payload, dict) or "state_dict" not in payload:
            raise ValueError(f"{path}: not a brainscale encoder export (no state_dict); rerun its pretrain job.")
        counts.append(int(sum(tensor.numel() for tensor in payload["state_dict"].values())))
    return counts


def write_loss_scaling(log_files, keys, encoder_files, shard_folder, splits_dir, repetition_time: float,
                       outputs: dict, *, n_boot: int = 1000, seed: int = 0, log=None) -> pd.DataFrame:
    """Rule ``loss_scaling``: held-out loss against data per run, fitted, as a table and a figure.

    ``keys`` are (model, size, seed) of ``log_files`` and ``encoder_files`` (same order);
    ``outputs`` maps ``table``, ``points``, ``png`` and ``pdf`` to paths. The table has one fit per
    run and axis (subjects, hours); ``points`` the final held-out and own-subset losses of every run
    with its hours of data and the encoder's parameters (N of the N x D grid).
    """
    from .io import atomic_file
    from .plotting.laws import plot_loss_scaling

    points = final_losses(log_files, keys)
    hours = subset_hours(shard_folder, splits_dir, repetition_time, [(size, seed) for _, size, seed in keys])
    points["hours"] = hours.reindex(list(zip(points["size"], points["seed"]))).to_numpy()
    points["parameters"] = encoder_parameters(encoder_files)
    points["value"] = points["val_loss"]
    table = scaling_law_table(points, measure="val_loss", direction=-1, axes={"size": "subjects", "hours": "hours"},
                              group=["model", "objective", "model_size", "parameters"], n_boot=n_boot, seed=seed)
    for key, frame in (("table", table), ("points", points.drop(columns="value"))):
        with atomic_file(outputs[key]) as temporary:
            frame.to_csv(temporary, sep="\t", index=False, float_format="%.6g")
    plot_loss_scaling(points, table, [outputs["png"], outputs["pdf"]])
    if log is not None:
        for _, row in table[table["axis"] == "subjects"].iterrows():
            log(f"{row['model']}: held-out loss vs subjects, alpha {row['alpha']:.3g} "
                f"[{row['alpha_ci_low']:.3g}, {row['alpha_ci_high']:.3g}], E {row['E']:.4g} {row['reason']}")
    return table


def scaling_law_table(points: pd.DataFrame, *, measure: str, direction: int, axes: dict[str, str],
                      group: list[str], n_boot: int = 1000, seed: int = 0) -> pd.DataFrame:
    """One fit (:func:`bootstrap_fit`) per group of ``points`` and per data axis.

    Parameters
    ----------
    points : DataFrame
        One row per (group..., size, seed) with ``value`` and every column of ``axes``.
    measure : str
        What ``value`` is (``val_loss``, or a probe task's metric), written to the table.
    direction : {-1, 1}
        -1 for a loss, 1 for a score.
    axes : dict
        Column of ``points`` -> its name in the table (``{"size": "subjects", "hours": "hours"}``).
    group : list of str
        Columns that make one fit (model, or task and model).
    """
    rows = []
    for key, part in points.groupby(group, sort=True):
        key = key if isinstance(key, tuple) else (key,)
        for column, axis in axes.items():
            fit = bootstrap_fit(part, x=column, y="value", direction=direction, n_boot=n_boot, seed=seed)
            rows.append({**dict(zip(group, key)), "measure": measure, "axis": axis, **fit})
    columns = [*group, "measure", "axis", *FIT_COLUMNS]
    table = pd.DataFrame(rows, columns=columns)
    return table.astype({"improves": bool, "identifiable": bool})
