"""Cross-run subject re-identification (``subject_reid``): does a source know who a person is?

Protocol. Every row (a crop of an encoder, a run of functional connectivity) of a subject with
at least two runs is a query. Its candidates are every row of the other subjects and the rows
of the same subject's *other* runs, never a row of its own run (crops of one run share their
samples, so matching them says nothing about the person). The query's nearest neighbour is the
candidate with the highest Pearson correlation of feature vectors; the query succeeds when that
neighbour belongs to the same subject. The score is the mean success over queries (top-1
identification accuracy; chance is about the share of a query's candidates that are its own,
a few percent).

Each feature dimension is centred over the pool of rows first (its mean over rows, the group
average, is removed), then rows are correlated. Without it, dimensions with a large common offset
(LayerNorm outputs have a few; FC edges within a network share a high mean) dominate every
correlation, all rows look alike and identification measures those dimensions only. The choice
rests on measurements (docs/findings.md, "Which re-identification protocol"): on the demo's probe
subjects, whole-run FC identifies 0.885 of queries centred, 0.500 raw and 0.538 z-scored per
dimension (the former default); scaling every edge to unit spread gives the many edges that carry
only sampling noise the weight of the few that carry the person. The encoders' rows were at chance
under all three. :func:`fingerprint_summary` logs the raw form (that of Finn et al. 2015) beside it.

The score uses every query of the probe pool, not a train/test split (nothing is fitted):
it is one number per source, feature and layer.
"""

from __future__ import annotations

import numpy as np

__all__ = ["REID_TASK", "reidentification", "fingerprint_summary"]

REID_TASK = "subject_reid"


NORMALISATIONS = ("raw", "centred", "zscore")


def _correlations(features: np.ndarray, normalisation: str) -> np.ndarray:
    """(rows, rows) Pearson correlation of the rows after ``normalisation`` of every dimension over rows."""
    if normalisation not in NORMALISATIONS:
        raise ValueError(f"normalisation must be one of {NORMALISATIONS}, received {normalisation!r}")
    data = np.asarray(features, dtype=np.float64)
    if normalisation != "raw":
        data = data - data.mean(axis=0)
    if normalisation == "zscore":
        spread = data.std(axis=0)
        data = data / np.where(spread > 0, spread, 1.0)
    data = data - data.mean(axis=1, keepdims=True)
    norms = np.linalg.norm(data, axis=1, keepdims=True)
    data = data / np.where(norms > 0, norms, 1.0)
    return data @ data.T


def reidentification(features: np.ndarray, subjects, runs, *, normalisation: str = "centred") -> dict:
    """Top-1 cross-run re-identification accuracy of feature rows (see the module docstring).

    Parameters
    ----------
    features : (rows, dim) array
    subjects : (rows,) array
        Subject of each row.
    runs : (rows,) array
        Run of each row: any value that differs between the runs of one subject (run index,
        run id); rows of one run share it.
    normalisation : {"centred", "raw", "zscore"}, default="centred"
        What is done to every dimension over the rows before correlating: its mean removed (the
        group average), nothing, or a z-score.

    Returns
    -------
    dict with ``top1`` (NaN when no subject has two runs), ``n_queries`` (rows scored) and
    ``n_subjects`` (subjects with at least two runs).
    """
    features = np.asarray(features)
    subjects, runs = np.asarray(subjects).astype(str), np.asarray(runs).astype(str)
    if features.ndim != 2 or not len(features) == len(subjects) == len(runs):
        raise ValueError(f"reidentification: expected (rows, dim) features with one subject and one run per row; "
                         f"received features {features.shape}, {len(subjects)} subjects, {len(runs)} runs")
    run_keys = np.char.add(np.char.add(subjects, "\x00"), runs)  # a run is (subject, run)
    unique_subjects, subject_index = np.unique(subjects, return_inverse=True)
    runs_per_subject = np.array([len(np.unique(run_keys[subject_index == s])) for s in range(len(unique_subjects))])
    queries = np.flatnonzero(runs_per_subject[subject_index] >= 2)
    result = {"top1": np.nan, "n_queries": int(len(queries)), "n_subjects": int((runs_per_subject >= 2).sum())}
    if not len(queries):
        return result
    similarity = _correlations(features, normalisation)[queries]
    same_run = run_keys[queries][:, None] == run_keys[None, :]
    similarity[same_run] = -np.inf  # never a crop of the query's own run (the query included)
    neighbour = similarity.argmax(axis=1)
    result["top1"] = float(np.mean(subject_index[neighbour] == subject_index[queries]))
    return result


def fingerprint_summary(features: np.ndarray, subjects, runs) -> str:
    """One log line: identification rate with raw (Finn et al. 2015) and centred (``subject_reid``) correlations."""
    raw = reidentification(features, subjects, runs, normalisation="raw")
    centred = reidentification(features, subjects, runs, normalisation="centred")
    return (f"fingerprint identification across runs: {raw['top1']:.3f} (raw correlation, as Finn et al. 2015), "
            f"{centred['top1']:.3f} (group mean removed, the {REID_TASK} score), {raw['n_queries']} queries of "
            f"{raw['n_subjects']} subjects with two or more runs")
