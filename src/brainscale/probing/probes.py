"""Linear probes of frozen features: one task, one feature, one layer, one split at a time.

A probe standardises the features, projects them onto the span of its training rows (exact
for an L2-penalised linear model, whose weights lie in that span; it makes 100,000-edge
connectivity rows cheap), then fits logistic regression (classes) or ridge regression on
standardised targets (continuous). Rows are crops (or runs for connectivity); a subject's
prediction is the mean over its rows of the decision function (classes) or of the prediction.

Strengths are relative to the data: ``strength`` s means a penalty of s times the largest
eigenvalue of the Gram matrix of the standardised training rows (ridge alpha; logistic
C = 1 / that penalty). At s = 100 every direction is shrunk at least a hundredfold, so the
grid reaches "predict the training mean" whatever the number of rows and dimensions.

The strength is chosen by grouped cross-validation over the train and val subjects together
(folds never split a subject; stratified on the label, or on the rank of a continuous one),
on the subject-level out-of-fold score (balanced accuracy, R2): the best score, ties to the
stronger (``selection`` best), or the strongest within one standard error over folds of the best
(one_se). Where the scores are flat, as for features that carry nothing, either choice is decided
by small changes of the features: on random-init features a relative 1e-3 change moved 3-5% of
the choices and a test score by up to 22 percentage points with either rule, a 1e-6 change none
(``benchmarks/probe_stability.py``); the average over splits and pretraining seeds, with its CI,
is what survives them. The model is then refitted on train and val and scored once on the test
subjects. The probe set is
split again for every split seed (stratified on the label for classes, on sorted blocks of the
target for continuous labels, so that no split shifts the target mean), the subjects of one
split never overlap, and none of them was seen in pretraining (they are the held-out probe set
of ``results/splits``).

Besides the label tasks, ``subject_reid`` (cross-run re-identification, :mod:`.reid`) is scored
once per feature and layer on the whole probe pool (``split_seed`` -1), and on the synthetic
demo ``latent_<trait>`` tasks (R2) probe the simulator's latent traits.
"""

from __future__ import annotations

import copy
import warnings

import numpy as np
import pandas as pd
from scipy.stats import pearsonr
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import accuracy_score, balanced_accuracy_score, mean_absolute_error, r2_score, roc_auc_score
from sklearn.model_selection import StratifiedGroupKFold

from ..errors import BrainscaleError
from ..shards.splits import SplitError, probe_split
from .embeddings import FeatureTable
from .reid import REID_TASK, fingerprint_summary, reidentification

__all__ = ["ProbeError", "resolve_tasks", "LinearProbe", "classification_metrics", "regression_metrics",
           "split_probe_subjects", "probe_one", "probe_features", "latent_labels", "run_probe_rule",
           "SELECTION_METRIC", "REID_TASK", "POOL_SEED"]

CLASSIFICATION, REGRESSION, IDENTIFICATION = "classification", "regression", "identification"
SELECTION_METRIC = {CLASSIFICATION: "balanced_accuracy", REGRESSION: "r2", IDENTIFICATION: "top1"}
METRIC_COLUMNS = ["balanced_accuracy", "accuracy", "auroc", "r2", "mae", "pearson_r", "top1"]
POOL_SEED = -1  # split_seed of scores computed on the whole probe pool (no split): subject_reid
LATENT_PREFIX = "latent_"


class ProbeError(BrainscaleError, ValueError):
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
        if name == REID_TASK or name.startswith(LATENT_PREFIX):
            raise ProbeError(f"probe task '{name}': the name is reserved ({REID_TASK} and latent_* are added by the "
                             "probe rule itself). Rename the task in probe.tasks.")
        label = task["label"]
        if label not in labels:
            raise ProbeError(f"probe task '{name}': label '{label}' is not among the shard labels "
                             f"({', '.join(labels)}). Name one of them, or add it to shards.labels and rebuild "
                             "the shards.")
        kind = task.get("kind") or (CLASSIFICATION if labels[label].get("map") else REGRESSION)
        resolved[name] = {"label": label, "kind": kind}
    return resolved


def _row_space(data: np.ndarray) -> tuple[np.ndarray, float]:
    """Orthonormal basis (rank, dim) of the rows of ``data`` and the largest eigenvalue of its Gram matrix.

    Through the eigendecomposition of the smaller of ``data.T @ data`` and ``data @ data.T``.
    """
    wide = data.shape[1] > data.shape[0]
    eigenvalues, vectors = np.linalg.eigh(data @ data.T if wide else data.T @ data)
    top = float(eigenvalues[-1]) if len(eigenvalues) else 0.0
    keep = eigenvalues > max(top, 1e-12) * 1e-10
    if wide:
        basis = (vectors[:, keep].T @ data) / np.sqrt(eigenvalues[keep])[:, None]
    else:
        basis = vectors[:, keep].T
    return basis, (top if top > 0 else 1.0)


class LinearProbe:
    """Standardise, project onto the training rows' span, then ridge or logistic regression.

    Parameters
    ----------
    kind : {"classification", "regression"}
    strengths : list of float
        Relative strengths s (see the module docstring); one model is fitted per strength on
        the same preprocessing.

    Attributes
    ----------
    mean_, scale_ : (dim,) arrays
        The standardisation of the features (as scikit-learn's StandardScaler: population
        standard deviation, 1 for a constant column).
    components_ : (rank, dim) array
        Orthonormal basis of the standardised training rows.
    gram_top_ : float
        Largest eigenvalue of their Gram matrix (the unit of the strengths).
    models_ : list
        Per strength, in the order of ``strengths``: a fitted ``LogisticRegression`` (classes) or
        the ridge weights on the projected features (continuous; closed form, the projected
        columns being orthogonal and centred).
    classes_ : array (classification)
    """

    def __init__(self, *, kind: str, strengths):
        self.kind = kind
        self.strengths = list(strengths)

    def fit(self, features, y):
        features = np.asarray(features, dtype=float)
        self.mean_ = features.mean(axis=0)
        scale = features.std(axis=0)
        self.scale_ = np.where(scale > 10 * np.finfo(float).eps * np.maximum(np.abs(self.mean_), 1.0), scale, 1.0)
        standardised = (features - self.mean_) / self.scale_
        self.components_, self.gram_top_ = _row_space(standardised)
        projected = standardised @ self.components_.T  # (rows, rank): orthogonal columns, centred
        y = np.asarray(y)
        if self.kind == CLASSIFICATION:
            self.classes_ = np.unique(y)
        else:
            self.y_mean_, self.y_scale_ = float(y.mean()), float(y.std()) or 1.0
            target = (y - self.y_mean_) / self.y_scale_
            norms, products = (projected ** 2).sum(axis=0), projected.T @ target
        self.models_ = [None] * len(self.strengths)
        # the logistic path, strongest first, each Newton fit (few dimensions after the projection)
        # starting from the previous solution
        path = LogisticRegression(solver="newton-cholesky", max_iter=5000, warm_start=True)
        for index in np.argsort(self.strengths, kind="stable")[::-1]:
            penalty = self.strengths[index] * self.gram_top_
            if self.kind == CLASSIFICATION:
                path.set_params(C=1.0 / penalty)
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", ConvergenceWarning)
                    path.fit(projected, y)
                self.models_[index] = copy.deepcopy(path)
            else:  # ridge in closed form: the columns are orthogonal and centred (no intercept)
                self.models_[index] = products / (norms + penalty)
        return self

    def outputs(self, features) -> list[np.ndarray]:
        """Per strength: decision function (classes) or predicted value (continuous) of every row."""
        projected = ((np.asarray(features, dtype=float) - self.mean_) / self.scale_) @ self.components_.T
        if self.kind == CLASSIFICATION:
            return [model.decision_function(projected) for model in self.models_]
        return [(projected @ weights) * self.y_scale_ + self.y_mean_ for weights in self.models_]


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
    """Train / val / test of the labelled probe subjects for one split seed.

    Classes keep their proportions in every part. A continuous label is stratified on sorted
    blocks of the target (as many subjects per block as the smallest share needs to get one,
    e.g. 5 for 0.6/0.2/0.2): without it, 15 test subjects of a site-driven age often sit far from
    the training mean and even a probe that predicts that mean scores R2 of -0.5.
    """
    frame = labels.dropna().to_frame("label")
    stratum = "label"
    if kind != CLASSIFICATION:
        shares = np.asarray(proportions, dtype=float) / np.sum(proportions)
        block = int(np.ceil(1.0 / shares.min() - 1e-9))
        order = frame["label"].rank(method="first").to_numpy() - 1
        frame["block"] = np.minimum(order // block, max(len(frame) // block - 1, 0)).astype(int)
        stratum = "block"
    try:
        parts = probe_split(frame, fraction=1.0, proportions=list(proportions), stratify=stratum, seed=seed)
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


def _evaluate(kind, classes, outputs, row_subjects, labels):
    """Subject-level metrics and predictions from row outputs (decision scores or predicted values)."""
    subjects, scores = _subject_means(np.asarray(outputs, dtype=float), row_subjects)
    y_true = labels.loc[subjects].to_numpy()
    if kind == CLASSIFICATION:
        metrics = classification_metrics(y_true, scores, classes)
        predicted = predicted_classes(scores, classes)
        score_column = scores if scores.ndim == 1 else scores.max(axis=1)
    else:
        metrics = regression_metrics(y_true, scores)
        predicted, score_column = scores, scores
    predictions = pd.DataFrame({"subject": subjects, "y_true": y_true, "y_pred": predicted, "score": score_column})
    return metrics, predictions


def _folds(subjects: np.ndarray, labels: pd.Series, kind: str, n_folds: int, seed: int) -> list[np.ndarray]:
    """Subjects of each cross-validation fold: stratified on the class, or on the rank of a continuous label."""
    n_folds = min(n_folds, len(subjects))
    if n_folds < 2:
        return []
    values = labels.loc[subjects]
    strata = values.to_numpy() if kind == CLASSIFICATION else \
        (values.rank(method="first").to_numpy() - 1) // n_folds
    splitter = StratifiedGroupKFold(n_splits=n_folds, shuffle=True, random_state=seed)
    with warnings.catch_warnings():  # a class rarer than the number of folds is allowed
        warnings.simplefilter("ignore", UserWarning)
        return [subjects[held] for _, held in splitter.split(subjects, strata, groups=subjects)]


def _training_classes(y_fit: np.ndarray, kind: str, task: str, n_subjects: int) -> np.ndarray | None:
    """The classes of the training rows (None for a regression); a ProbeError when there is only one."""
    if kind != CLASSIFICATION:
        return None
    classes = np.unique(y_fit)
    if len(classes) < 2:
        raise ProbeError(f"probe task '{task}': the label has a single class ({classes.tolist()}) among the "
                         f"{n_subjects} training subjects. Use more subjects (or a larger "
                         "splits.probe_fraction), or drop the task from probe.tasks.")
    return classes


def _out_of_fold_outputs(features, row_subjects, y_rows, fit_rows, folds, kind, classes, grid) -> list[np.ndarray]:
    """Per strength, the output of every row predicted by a probe fitted without its fold (NaN elsewhere).

    Outputs are (rows,) or, for more than two classes, (rows, classes).
    """
    shape = (len(row_subjects),) + ((len(classes),) if kind == CLASSIFICATION and len(classes) > 2 else ())
    out_of_fold = [np.full(shape, np.nan) for _ in grid]
    for held in folds:
        held_rows = np.isin(row_subjects, held)
        train_rows = fit_rows & ~held_rows
        if kind == CLASSIFICATION and len(np.unique(y_rows[train_rows])) < len(classes):
            continue  # a fold without every class cannot score its held-out subjects
        probe = LinearProbe(kind=kind, strengths=grid).fit(features[train_rows], y_rows[train_rows])
        for values, output in zip(out_of_fold, probe.outputs(features[held_rows])):
            values[held_rows] = output
    return out_of_fold


def _selection_score(kind, y_true, scores, classes) -> float:
    """Balanced accuracy (classes present in ``y_true``) or R2 of subject-level outputs; NaN when undefined.

    The selection metrics of :func:`classification_metrics` and :func:`regression_metrics` without
    their input checks: the strength selection computes thousands of them.
    """
    if kind == CLASSIFICATION:
        predicted = predicted_classes(scores, classes)
        return float(np.mean([(predicted[y_true == c] == c).mean() for c in np.unique(y_true)]))
    total = ((y_true - y_true.mean()) ** 2).sum()
    return float(1 - ((y_true - scores) ** 2).sum() / total) if len(y_true) > 1 and total > 0 else np.nan


def _select_strength(out_of_fold, fit_rows, row_subjects, labels, kind, classes, grid, folds, selection="best"):
    """The strength of ``grid`` (strongest first) chosen on the out-of-fold subject-level scores.

    ``best``: the highest pooled score (ties keep the stronger); ``one_se``: the strongest whose
    pooled score is at least the best minus one standard error of the best's per-fold scores.

    Returns
    -------
    (score, strength, predictions): its pooled score (-inf for NaN) and its out-of-fold
    predictions; the strongest, with score -inf and predictions None, when no row was scored (too
    few subjects).
    """
    scored = fit_rows & np.isfinite(out_of_fold[0].reshape(len(row_subjects), -1)).all(axis=1)
    if not scored.any():
        return -np.inf, grid[0], None
    subjects, means = _subject_means(np.stack([values[scored] for values in out_of_fold], axis=1),
                                     row_subjects[scored])  # (subjects, strengths[, classes])
    y_true = labels.loc[subjects].to_numpy()
    fold_members = [np.isin(subjects, held) for held in folds]
    fold_members = [member for member in fold_members if member.any()]
    pooled, per_fold = [], []
    for index in range(len(grid)):
        pooled.append(_selection_score(kind, y_true, means[:, index], classes))
        per_fold.append([_selection_score(kind, y_true[member], means[member, index], classes)
                         for member in fold_members])
    pooled = np.nan_to_num(np.asarray(pooled), nan=-np.inf)
    chosen = int(np.argmax(pooled))  # the first maximum: the strongest of a tie
    if selection == "one_se" and np.isfinite(pooled[chosen]):
        fold_scores = np.asarray(per_fold[chosen], dtype=float)
        fold_scores = fold_scores[np.isfinite(fold_scores)]
        if len(fold_scores) > 1:
            margin = fold_scores.std(ddof=1) / np.sqrt(len(fold_scores))
            chosen = int(np.flatnonzero(pooled >= pooled[chosen] - margin)[0])
    _, predictions = _evaluate(kind, classes, out_of_fold[chosen][scored], row_subjects[scored], labels)
    return float(pooled[chosen]), grid[chosen], predictions


def probe_one(features: np.ndarray, row_subjects: np.ndarray, labels: pd.Series, split: dict, kind: str,
              grid, *, task: str = "task", n_folds: int = 5, seed: int = 0, selection: str = "best",
              folds: list | None = None) -> tuple[dict, pd.DataFrame]:
    """Choose the strength by grouped CV over train + val, refit on them, score the test subjects.

    Parameters
    ----------
    features : (rows, dim) array
    row_subjects : (rows,) array of subject ids
    labels : pandas.Series
        Label per subject (index: subject id); classes are integers for classification.
    split : dict with ``train``, ``val``, ``test`` subject arrays
    kind : {"classification", "regression"}
    grid : list of float
        Relative regularisation strengths tried (see the module docstring).
    n_folds : int, default=5
        Cross-validation folds over the train and val subjects (fewer when there are fewer subjects).
    seed : int, default=0
        Seed of the fold assignment.
    selection : {"best", "one_se"}, default="best"
        How the out-of-fold scores choose the strength (see the module docstring).
    folds : list of subject arrays, optional
        The cross-validation folds, when the caller shares them across features and layers
        (default: drawn from ``split``, ``n_folds`` and ``seed``).

    Returns
    -------
    (metrics, predictions): test metrics with ``strength`` and ``val_score`` (the out-of-fold
    score of that strength); subject-level predictions, out-of-fold for the train and val subjects
    (``part`` cv) and of the refitted model for the test subjects (``part`` test).
    """
    fit_subjects = np.sort(np.concatenate([split["train"], split["val"]]))
    fit_rows = np.isin(row_subjects, fit_subjects)
    test_rows = np.isin(row_subjects, split["test"])
    y_rows = labels.reindex(row_subjects).to_numpy()
    classes = _training_classes(y_rows[fit_rows], kind, task, len(fit_subjects))
    grid = sorted(grid, reverse=True)  # strongest first: ties keep the simpler model
    if folds is None:
        folds = _folds(fit_subjects, labels, kind, n_folds, seed)
    out_of_fold = _out_of_fold_outputs(features, row_subjects, y_rows, fit_rows, folds, kind, classes, grid)
    score, strength, cv_predictions = _select_strength(out_of_fold, fit_rows, row_subjects, labels, kind, classes,
                                                       grid, folds, selection)
    final = LinearProbe(kind=kind, strengths=[strength]).fit(features[fit_rows], y_rows[fit_rows])
    metrics, test_predictions = _evaluate(kind, classes, final.outputs(features[test_rows])[0],
                                          row_subjects[test_rows], labels)
    metrics.update(strength=strength, val_score=score, n_train=len(fit_subjects), n_test=len(split["test"]))
    frames = [test_predictions.assign(part="test")]
    if cv_predictions is not None:
        frames.insert(0, cv_predictions.assign(part="cv"))
    return metrics, pd.concat(frames, ignore_index=True)


def _reid_rows(table: FeatureTable, layer_indices, log=None) -> list[dict]:
    """One ``subject_reid`` metrics row per feature and layer (NaN without run identities, e.g. the oracle)."""
    rows = []
    runs = table.extra.get("run_id")
    for name in table.names:
        for layer in layer_indices:
            result = {"top1": np.nan, "n_queries": 0, "n_subjects": 0}
            if runs is not None:
                result = reidentification(table.matrix(name, layer), table.subjects, runs)
            rows.append({"task": REID_TASK, "kind": IDENTIFICATION, "feature": name, "layer": layer + 1,
                         "n_layers": table.n_layers, "split_seed": POOL_SEED, "top1": result["top1"],
                         "n_train": np.nan, "n_test": result["n_subjects"], "n_queries": result["n_queries"]})
    if log is not None:
        if runs is None:
            log(f"{REID_TASK}: skipped (NaN): the features have no run identity (one row per subject)")
        else:
            last = rows[-1]
            log(f"{REID_TASK} ({last['feature']}, layer {last['layer']}): {last['top1']:.3f} over "
                f"{last['n_queries']} queries of {last['n_test']} subjects with two or more runs")
    return rows


def probe_features(table: FeatureTable, labels: pd.DataFrame, tasks: dict, *, split_seeds, proportions, grid,
                   layers: str = "all", n_folds: int = 5, subject_reid: bool = True, selection: str = "best",
                   log=None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Every task x feature x layer x split seed of one feature table, and ``subject_reid``.

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
        Relative strengths.
    layers : {"all", "last"}
    n_folds : int, default=5
        Cross-validation folds of the strength selection.
    subject_reid : bool, default=True
        Add the cross-run re-identification rows (one per feature and layer, ``split_seed`` -1).
    selection : {"best", "one_se"}, default="best"
        The strength-selection rule (:func:`probe_one`).

    Returns
    -------
    (metrics, predictions) DataFrames; metrics has one row per task, feature, layer, split seed.
    """
    metric_rows, prediction_frames = [], []
    n_layers = table.n_layers
    layer_indices = range(n_layers) if layers == "all" else [n_layers - 1]
    for task, spec in tasks.items():
        label = _task_label(labels, task, spec, np.unique(table.subjects))
        for seed in split_seeds:
            split = split_probe_subjects(label, spec["kind"], proportions, seed)
            # one set of folds per task and split: every feature and layer is selected on the same subjects
            folds = _folds(np.sort(np.concatenate([split["train"], split["val"]])), label.dropna(), spec["kind"],
                           n_folds, seed)
            for name in table.names:
                for layer in layer_indices:
                    features = table.matrix(name, layer)
                    metrics, predictions = probe_one(features, table.subjects, label.dropna(), split, spec["kind"],
                                                     grid, task=task, n_folds=n_folds, seed=seed,
                                                     selection=selection, folds=folds)
                    keys = {"task": task, "kind": spec["kind"], "feature": name, "layer": layer + 1,
                            "n_layers": n_layers, "split_seed": seed}
                    metric_rows.append({**keys, **metrics})
                    prediction_frames.append(predictions.assign(**keys))
            if log is not None:
                log(f"task {task}, split seed {seed}: done")
    if subject_reid:
        metric_rows += _reid_rows(table, layer_indices, log)
    return _metrics_table(metric_rows), _predictions_table(prediction_frames)


def _task_label(labels: pd.DataFrame, task: str, spec: dict, subjects: np.ndarray) -> pd.Series:
    """The task's label per subject of ``subjects`` (classes as integers, unlabelled subjects dropped)."""
    if spec["label"] not in labels.columns:
        raise ProbeError(f"probe task '{task}': label '{spec['label']}' is absent from the shards (they hold "
                         f"{', '.join(labels.columns) or 'no label'}). Add it to shards.labels and rebuild the "
                         "shards, or drop the task from probe.tasks.")
    label = labels[spec["label"]].reindex(subjects)
    if spec["kind"] == CLASSIFICATION:
        label = label.dropna().astype(int)
    return label


# Columns of the metrics table after the metrics: the chosen strength, its score and the counts.
_FIT_COLUMNS = ["strength", "val_score", "n_train", "n_test", "n_queries"]
# Leading columns of the predictions table.
_PREDICTION_KEYS = ["task", "kind", "feature", "layer", "split_seed", "part", "subject"]


def _metrics_table(rows: list[dict]) -> pd.DataFrame:
    """The metrics rows with every metric column (NaN where a task has no such metric), keys first."""
    metrics = pd.DataFrame(rows)
    for column in METRIC_COLUMNS + _FIT_COLUMNS:
        if column not in metrics:
            metrics[column] = np.nan
    return metrics[["task", "kind", "feature", "layer", "n_layers", "split_seed", *METRIC_COLUMNS, *_FIT_COLUMNS]]


def _predictions_table(frames: list[pd.DataFrame]) -> pd.DataFrame:
    """The prediction frames as one table, keys first (an empty table with the columns when there is none)."""
    predictions = pd.concat(frames, ignore_index=True) if frames else \
        pd.DataFrame(columns=_PREDICTION_KEYS + ["y_true", "y_pred", "score", "n_layers"])
    return predictions[_PREDICTION_KEYS + [c for c in predictions.columns if c not in _PREDICTION_KEYS]]


def latent_labels(latents_tsv) -> pd.DataFrame:
    """The simulator's latent traits per subject (``latent_*`` columns of ground_truth/latents.tsv)."""
    from pathlib import Path

    path = Path(latents_tsv)
    if not path.is_file():
        raise ProbeError(f"{path}: no such file; the latent tasks read the simulator's ground truth. Rerun rule "
                         "simulate_derivatives, or set probe.latents: false.")
    table = pd.read_csv(path, sep="\t", dtype={"participant_id": str})
    columns = [c for c in table.columns if c.startswith(LATENT_PREFIX)]
    if "participant_id" not in table.columns or not columns:
        raise ProbeError(f"{path}: expected participant_id and latent_* columns, found {', '.join(table.columns)}. "
                         "Regenerate the synthetic dataset (delete it and rerun snakemake).")
    return table.set_index("participant_id")[columns].astype(float)


def run_probe_rule(features_path, shard_folder, settings: dict, labels_config: dict, proportions,
                   metrics_output, predictions_output, *, latents=None, log=None) -> pd.DataFrame:
    """Probe one feature file on the shards' labels and write metrics and predictions (rule ``probe``).

    ``latents`` is the simulator's ``ground_truth/latents.tsv`` (synthetic data only): each
    ``latent_<trait>`` column becomes a regression task of that name, except for the oracle,
    whose features are those latents (its score would be 1 by construction).
    """
    from ..io import atomic_file
    from ..shards.reader import shard_paths, subjects_from_shards
    from .embeddings import read_features

    tasks = resolve_tasks(settings["tasks"], labels_config)
    table = read_features(features_path)
    labels = subjects_from_shards(shard_paths(shard_folder))  # every label the shards hold
    if latents is not None and table.attrs.get("source") != "oracle":
        truth = latent_labels(latents)
        absent = sorted(set(table.subjects) - set(truth.index))
        if absent:
            raise ProbeError(f"{latents}: no latent traits for {len(absent)} probe subjects, e.g. {absent[:3]}; the "
                             "shards were not built from this simulated dataset. Rebuild them, or set "
                             "probe.latents: false.")
        labels = labels.join(truth, how="left")
        tasks.update({column: {"label": column, "kind": REGRESSION} for column in truth.columns})
    if table.attrs.get("source") == "connectivity" and "run_id" in table.extra and log is not None:
        log(fingerprint_summary(table.matrix("fc"), table.subjects, table.extra["run_id"]))
    elif table.attrs.get("source") == "connectivity" and settings["subject_reid"]:
        raise ProbeError(f"{features_path}: connectivity features without run_id (one row per subject, an older "
                         "layout); subject_reid needs one row per run. Delete the file and rerun rule "
                         "connectivity_features.")
    metrics, predictions = probe_features(table, labels, tasks, split_seeds=settings["split_seeds"],
                                          proportions=proportions, grid=settings["strengths"],
                                          layers=settings["layers"], n_folds=settings["cv_folds"],
                                          subject_reid=settings["subject_reid"],
                                          selection=settings.get("selection", "best"), log=log)
    with atomic_file(predictions_output) as temporary:
        predictions.to_csv(temporary, sep="\t", index=False, compression="gzip")
    with atomic_file(metrics_output) as temporary:
        metrics.to_csv(temporary, sep="\t", index=False, float_format="%.6g")
    return metrics
