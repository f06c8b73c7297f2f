"""Features of the non-learned baselines, in the feature-file layout of :mod:`.embeddings`.

- Functional connectivity: per run, the Pearson correlation of every pair of channels,
  Fisher z-transformed (the upper triangle). Channels a run lacks contribute zeros. One row per
  run, with its ``run_id``: the phenotype probes average a subject's rows like an encoder's
  crops, and ``subject_reid`` matches runs (connectome fingerprinting, Finn et al. 2015).
- Oracle (synthetic data only): what the simulator drew the phenotypes from: the latent traits
  (which also drive the network dynamics), the site (one-hot; site sets the age distribution)
  and their products (site scales the age latent). A linear probe of these is the ceiling.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from ..shards.reader import ShardDataset
from .embeddings import FeatureTable

__all__ = ["connectivity_features", "oracle_features", "fisher_z_connectivity"]


def fisher_z_connectivity(timeseries: np.ndarray, missing: np.ndarray | None = None) -> np.ndarray:
    """Upper triangle (k=1) of the Fisher z-transformed correlation matrix of (channels, T) data."""
    data = np.asarray(timeseries, dtype=np.float64)
    data = data - data.mean(axis=1, keepdims=True)
    norms = np.linalg.norm(data, axis=1)
    usable = norms > 0
    if missing is not None:
        usable &= ~np.asarray(missing, dtype=bool)
    data[~usable] = 0.0
    data[usable] /= norms[usable, None]
    correlation = data @ data.T
    upper = correlation[np.triu_indices(len(data), k=1)]
    return np.arctanh(np.clip(upper, -0.999999, 0.999999)).astype(np.float32)


def connectivity_features(dataset: ShardDataset, log=None) -> FeatureTable:
    """One row per run of ``dataset``: :func:`fisher_z_connectivity`, with ``run_id`` (the run's index)."""
    rows, subjects = [], []
    for run, (_, _, _, position) in enumerate(dataset.runs):
        timeseries, missing = dataset.read_run(run)
        rows.append(fisher_z_connectivity(timeseries, missing))
        subjects.append(dataset.subject_ids[position])
        if log is not None and (run + 1) % 50 == 0:
            log(f"connectivity of {run + 1}/{len(dataset.runs)} runs")
    features = np.stack(rows)[:, None, :]
    return FeatureTable(np.asarray(subjects), {"fc": features}, {"run_id": np.arange(len(rows), dtype=np.int64)},
                        attrs={"source": "connectivity"})


def oracle_features(latents_tsv: str | Path, participants_tsv: str | Path, subjects) -> FeatureTable:
    """One row per subject: latents (``latent_*`` of latents.tsv), site one-hot, and their products."""
    latents = pd.read_csv(latents_tsv, sep="\t", index_col="participant_id")
    sites = pd.read_csv(participants_tsv, sep="\t", index_col="participant_id")["site"]
    subjects = [str(s) for s in subjects]
    absent = sorted(set(subjects) - (set(latents.index) & set(sites.index)))
    if absent:
        raise ValueError(f"{latents_tsv}: no ground truth for {len(absent)} subjects, e.g. {absent[:3]}; the oracle "
                         "baseline needs the simulated dataset the shards were built from.")
    columns = [c for c in latents.columns if c.startswith("latent_")]
    values = latents.loc[subjects, columns].to_numpy(dtype=np.float64)
    one_hot = pd.get_dummies(sites.loc[subjects]).to_numpy(dtype=np.float64)
    products = (values[:, :, None] * one_hot[:, None, :]).reshape(len(subjects), -1)
    features = np.concatenate([values, one_hot, products], axis=1).astype(np.float32)[:, None, :]
    return FeatureTable(np.asarray(subjects), {"ground_truth": features},
                        attrs={"source": "oracle", "latents": ",".join(columns)})
