"""Linear probes of frozen features: one task, one feature, one layer, one split at a time.

A probe is a scikit-learn pipeline: standardisation, then logistic regression (classes) or
ridge regression on standardised targets (continuous). Rows are crops (or subjects for the
baselines); a subject's prediction is the mean over its rows of the decision function
(classes) or of the prediction (continuous). The regularisation strength is the one whose
subject-level validation score is best (ties go to the stronger regularisation); the test
metrics are those of that model. The probe set is split again for every split seed
(stratified on the label for classification), the subjects of one split never overlap, and
none of them was seen in pretraining (they are the held-out probe set of ``results/splits``).
"""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
from scipy.stats import pearsonr
from sklearn.compose import TransformedTargetRegressor
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression, Ridge
from sklearn.metrics import accuracy_score, balanced_accuracy_score, mean_absolute_error, r2_score, roc_auc_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from ..shards.splits import SplitError, probe_split
from .embeddings import FeatureTable

__all__ = ["ProbeError", "resolve_tasks", "make_probe", "classification_metrics", "regression_metrics",
           "split_probe_subjects", "probe_one", "probe_features", "run_probe_rule", "SELECTION_METRIC"]

CLASSIFICATION, REGRESSION = "classification", "regression"
SELECTION_METRIC = {CLASSIFICATION: "balanced_accuracy", REGRESSION: "r2"}
METRIC_COLUMNS = ["balanced_accuracy", "accuracy", "auroc", "r2", "mae", "pearson_r"]


class ProbeError(ValueError):
    """A probe cannot be fitted as configured (the message names the task and the fix)."""


def resolve_tasks(tasks: dict | None, labels: dict) -> dict[str, dict]:
    """Tasks ``{name: {label, kind}}`` from ``probe.tasks`` and ``shards.labels``.

    ``tasks`` None means one task per shard label. A label with a ``map`` (categories turned
    into numbers) is a classification, any other a regression, unless the task sets ``kind``.
    """
    if tasks is None:
        tasks = {name: {"label": name} for name in labels}
    resolved = {}
    for name, task in tasks.items():
        label = task["label"]
        if label not in labels:
            raise ProbeError(f"probe task '{name}': label '{label}' is not among the shard labels "
                             f"({', '.join(labels)}). Name one of them, or add it to shards.labels and rebuild "
                             "the shards.")
        kind = task.get("kind") or (CLASSIFICATION if labels[label].get("map") else REGRESSION)
        resolved[name] = {"label": label, "kind": kind}
    return resolved


def make_probe(kind: str, strength: float):
    """Standardise, then logistic regression (C = 1 / strength) or ridge (alpha = strength) on z-scored y."""
    if kind == CLASSIFICATION:
        return make_pipeline(StandardScaler(), LogisticRegression(C=1.0 / strength, max_iter=5000))
    return TransformedTargetRegressor(regressor=make_pipeline(StandardScaler(), Ridge(alpha=strength)),
                                      transformer=StandardScaler())


def predicted_classes(scores, classes) -> np.ndarray:
    """Class of each decision score: ``classes[1]`` where a (n,) score is positive, else the arg max of (n, k)."""
    scores, classes = np.asarray(scores), np.asarray(classes)
    return classes[(scores > 0).astype(int)] if scores.ndim == 1 else classes[scores.argmax(axis=1)]


def classification_metrics(y_true, scores, classes) -> dict:
    """Balanced accuracy, accuracy and AUROC of subject-level decision scores.

    ``scores`` is (n,) for two classes (positive: ``classes[1]``) or (n, k). AUROC is NaN when
    the evaluated subjects hold a single class.
    """
    y_true, scores, classes = np.asarray(y_true), np.asarray(scores, dtype=float), np.asarray(classes)
    predicted = predicted_classes(scores, classes)
    if scores.ndim == 1:
        probability = scores
    else:
        shifted = np.exp(scores - scores.max(axis=1, keepdims=True))
        probability = shifted / shifted.sum(axis=1, keepdims=True)
    with warnings.catch_warnings():  # a single class among the evaluated subjects is allowed
        warnings.simplefilter("ignore", UserWarning)
        metrics = {"balanced_accuracy": balanced_accuracy_score(y_true, predicted),
                   "accuracy": accuracy_score(y_true, predicted), "auroc": np.nan}
    if len(np.unique(y_true)) > 1:
        metrics["auroc"] = roc_auc_score(y_true, probability) if scores.ndim == 1 else \
            roc_auc_score(y_true, probability, multi_class="ovr", labels=classes)
    return metrics


def regression_metrics(y_true, y_predicted) -> dict:
    """R2, mean absolute error and Pearson r (NaN for a constant prediction or fewer than 2 subjects)."""
    y_true, y_predicted = np.asarray(y_true, dtype=float), np.asarray(y_predicted, dtype=float)
    correlation = np.nan
    if len(y_true) > 1 and np.ptp(y_predicted) > 0 and np.ptp(y_true) > 0:
        correlation = float(pearsonr(y_true, y_predicted)[0])
    r2 = r2_score(y_true, y_predicted) if len(y_true) > 1 else np.nan
    return {"r2": r2, "mae": mean_absolute_error(y_true, y_predicted), "pearson_r": correlation}


def split_probe_subjects(labels: pd.Series, kind: str, proportions, seed: int) -> dict[str, np.ndarray]:
    """Train / val / test of the labelled probe subjects for one split seed (stratified for classes)."""
    frame = labels.dropna().to_frame("label")
    try:
        parts = probe_split(frame, fraction=1.0, proportions=list(proportions),
                            stratify="label" if kind == CLASSIFICATION else None, seed=seed)
    except SplitError as error:
        raise ProbeError(str(error).replace("splits.probe_fraction", "splits.probe_fraction (the probe set)")) \
            from None
    return {name: parts[name] for name in ("train", "val", "test")}


def _subject_means(values: np.ndarray, row_subjects: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean of row values per subject: (sorted subjects, means)."""
    subjects, inverse = np.unique(row_subjects, return_inverse=True)
    totals = np.zeros((len(subjects),) + values.shape[1:])
    np.add.at(totals, inverse, values)
    counts = np.bincount(inverse, minlength=len(subjects)).reshape((-1,) + (1,) * (values.ndim - 1))
    return subjects, totals / counts


def _subject_scores(model, kind: str, features: np.ndarray, row_subjects: np.ndarray):
    values = model.decision_function(features) if kind == CLASSIFICATION else model.predict(features)
    return _subject_means(np.asarray(values, dtype=float), row_subjects)


def _evaluate(model, kind, features, row_subjects, labels):
    subjects, scores = _subject_scores(model, kind, features, row_subjects)
    y_true = labels.loc[subjects].to_numpy()
    if kind == CLASSIFICATION:
        classes = model.classes_
        metrics = classification_metrics(y_true, scores, classes)
        predicted = predicted_classes(scores, classes)
        score_column = scores if scores.ndim == 1 else scores.max(axis=1)
    else:
        metrics = regression_metrics(y_true, scores)
        predicted, score_column = scores, scores
    predictions = pd.DataFrame({"subject": subjects, "y_true": y_true, "y_pred": predicted, "score": score_column})
    return metrics, predictions


def probe_one(features: np.ndarray, row_subjects: np.ndarray, labels: pd.Series, split: dict, kind: str,
              grid, *, task: str = "task") -> tuple[dict, pd.DataFrame]:
    """Fit the probe of one feature matrix on one split; select the strength on val; score test.

    Parameters
    ----------
    features : (rows, dim) array
    row_subjects : (rows,) array of subject ids
    labels : pandas.Series
        Label per subject (index: subject id); classes are integers for classification.
    split : dict with ``train``, ``val``, ``test`` subject arrays
    kind : {"classification", "regression"}
    grid : list of float
        Regularisation strengths tried.

    Returns
    -------
    (metrics, predictions): test metrics with ``strength`` and ``val_score``; subject-level
    predictions of val and test (column ``part``).
    """
    rows = {name: np.isin(row_subjects, split[name]) for name in ("train", "val", "test")}
    y_rows = labels.reindex(row_subjects).to_numpy()
    train_classes = np.unique(y_rows[rows["train"]])
    if kind == CLASSIFICATION and len(train_classes) < 2:
        raise ProbeError(f"probe task '{task}': the label has a single class ({train_classes.tolist()}) among the "
                         f"{len(split['train'])} training subjects. Use more subjects (or a larger "
                         "splits.probe_fraction), or drop the task from probe.tasks.")
    best = None
    selection = SELECTION_METRIC[kind]
    for strength in sorted(grid, reverse=True):  # strongest first: ties keep the simpler model
        model = make_probe(kind, strength)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            model.fit(features[rows["train"]], y_rows[rows["train"]])
        val_metrics, val_predictions = _evaluate(model, kind, features[rows["val"]], row_subjects[rows["val"]],
                                                 labels)
        score = val_metrics[selection]
        score = -np.inf if np.isnan(score) else score
        if best is None or score > best[0]:
            best = (score, strength, model, val_predictions)
    score, strength, model, val_predictions = best
    metrics, test_predictions = _evaluate(model, kind, features[rows["test"]], row_subjects[rows["test"]], labels)
    metrics.update(strength=strength, val_score=score, n_train=len(split["train"]), n_test=len(split["test"]))
    predictions = pd.concat([val_predictions.assign(part="val"), test_predictions.assign(part="test")])
    return metrics, predictions


def probe_features(table: FeatureTable, labels: pd.DataFrame, tasks: dict, *, split_seeds, proportions, grid,
                   layers: str = "all", log=None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Every task x feature x layer x split seed of one feature table.

    Parameters
    ----------
    table : FeatureTable
    labels : pandas.DataFrame
        Label columns per subject (index: subject id), e.g. from ``subjects_from_shards``.
    tasks : dict
        ``{name: {label, kind}}`` (:func:`resolve_tasks`).
    split_seeds : list of int
    proportions : 3 floats (train, val, test)
    grid : list of float
    layers : {"all", "last"}

    Returns
    -------
    (metrics, predictions) DataFrames; metrics has one row per task, feature, layer, split seed.
    """
    metric_rows, prediction_frames = [], []
    n_layers = table.n_layers
    layer_indices = range(n_layers) if layers == "all" else [n_layers - 1]
    for task, spec in tasks.items():
        if spec["label"] not in labels.columns:
            raise ProbeError(f"probe task '{task}': label '{spec['label']}' is absent from the shards (they hold "
                             f"{', '.join(labels.columns) or 'no label'}). Add it to shards.labels and rebuild the "
                             "shards, or drop the task from probe.tasks.")
        label = labels[spec["label"]].reindex(np.unique(table.subjects))
        if spec["kind"] == CLASSIFICATION:
            label = label.dropna().astype(int)
        for seed in split_seeds:
            split = split_probe_subjects(label, spec["kind"], proportions, seed)
            for name in table.names:
                for layer in layer_indices:
                    features = table.matrix(name, layer)
                    metrics, predictions = probe_one(features, table.subjects, label.dropna(), split, spec["kind"],
                                                     grid, task=task)
                    keys = {"task": task, "kind": spec["kind"], "feature": name, "layer": layer + 1,
                            "n_layers": n_layers, "split_seed": seed}
                    metric_rows.append({**keys, **metrics})
                    prediction_frames.append(predictions.assign(**keys))
            if log is not None:
                log(f"task {task}, split seed {seed}: done")
    metrics = pd.DataFrame(metric_rows)
    for column in METRIC_COLUMNS:
        if column not in metrics:
            metrics[column] = np.nan
    ordered = ["task", "kind", "feature", "layer", "n_layers", "split_seed", *METRIC_COLUMNS, "strength",
               "val_score", "n_train", "n_test"]
    predictions = pd.concat(prediction_frames, ignore_index=True)
    first = ["task", "kind", "feature", "layer", "split_seed", "part", "subject"]
    return metrics[ordered], predictions[first + [c for c in predictions.columns if c not in first]]


def run_probe_rule(features_path, shard_folder, settings: dict, labels_config: dict, proportions,
                   metrics_output, predictions_output, *, log=None) -> pd.DataFrame:
    """Probe one feature file on the shards' labels and write metrics and predictions (rule ``probe``)."""
    from ..io import atomic_file
    from ..shards.reader import shard_paths, subjects_from_shards
    from .embeddings import read_features

    tasks = resolve_tasks(settings["tasks"], labels_config)
    table = read_features(features_path)
    labels = subjects_from_shards(shard_paths(shard_folder))  # every label the shards hold
    metrics, predictions = probe_features(table, labels, tasks, split_seeds=settings["split_seeds"],
                                          proportions=proportions, grid=settings["strengths"],
                                          layers=settings["layers"], log=log)
    with atomic_file(predictions_output) as temporary:
        predictions.to_csv(temporary, sep="\t", index=False, compression="gzip")
    with atomic_file(metrics_output) as temporary:
        metrics.to_csv(temporary, sep="\t", index=False, float_format="%.6g")
    return metrics
