"""Crop rows or one mean per run: which rows should a probe fit, and does the protocol matter?

Our probes fit one row per crop (8 crops of a whole run) and average a subject's decision values;
Brainmarks' plugin averages the crops into one embedding per run and its ``main_logistic`` fits one
row per run. On the demo's last-layer features of each run at the largest size, this script

1. on the Brainmarks export's split (``results/brainmarks/export.json``), scores sex with our probe
   and with a copy of ``main_logistic``'s pipeline (StandardScaler + LogisticRegressionCV, 10 Cs,
   5 stratified shuffle splits, balanced accuracy) on three kinds of rows: crop rows, the crops' mean
   per run, and the crops' mean over the first 150 TRs of each run (what the plugin gives);
2. over every probe split seed and pretraining seed, scores sex and age with our probe on crop rows
   and on the crops' mean per run.

    python benchmarks/probe_rows.py            # from a workflow folder after the demo and brainmarks_export
"""

import argparse
import json
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from sklearn.linear_model import LogisticRegressionCV
from sklearn.model_selection import StratifiedShuffleSplit
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler

from brainscale.brainmarks import run_bold
from brainscale.brainmarks.model import brainmarks_encoder
from brainscale.config import load_config
from brainscale.probing.embeddings import probe_dataset, read_features
from brainscale.probing.probes import _folds, probe_one, split_probe_subjects
from brainscale.shards.reader import shard_paths, subjects_from_shards

TASKS = {"sex": ("sex_bi", "classification", "balanced_accuracy"), "age": ("age", "regression", "r2")}


def run_means(features: np.ndarray, subjects: np.ndarray, runs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The crops' mean per run: (runs, dim) and each run's subject."""
    order = np.unique(runs)
    return (np.stack([features[runs == r].mean(axis=0) for r in order]),
            np.array([subjects[runs == r][0] for r in order]))


def plugin_rows(encoder: Path, shards: str, splits: str, frames: int) -> tuple[np.ndarray, np.ndarray]:
    """The plugin's CLS embedding of the first ``frames`` TRs of every probe run."""
    transform, wrapper = brainmarks_encoder(encoder)
    dataset = probe_dataset(shards, splits, crop_length=1, n_crops=1)
    rows, subjects = [], []
    for run, (_, _, _, position) in enumerate(dataset.runs):
        series, _ = dataset.read_run(run)
        sample = transform({"bold": torch.from_numpy(run_bold(series, np.arange(len(series)), frames)), "tr": 2.0})
        with torch.no_grad():
            embeddings = wrapper({key: sample[key][None] for key in ("bold", "missing")})
        rows.append(embeddings.cls_embeds[0, 0].numpy())
        subjects.append(dataset.subject_ids[position])
    return np.stack(rows), np.array(subjects)


def brainmarks_pipeline(features, subjects, labels, split) -> float:
    fit = np.isin(subjects, np.concatenate([split["train"], split["val"]]))
    test = np.isin(subjects, split["test"])
    y = labels.reindex(subjects).to_numpy()
    validation = np.isin(subjects, split["val"]).sum() / fit.sum()
    model = Pipeline([("scale", StandardScaler()), ("logistic", LogisticRegressionCV(
        Cs=10, cv=StratifiedShuffleSplit(5, test_size=validation, random_state=1), scoring="balanced_accuracy",
        max_iter=1000))])
    model.fit(features[fit], y[fit])
    return float((model.predict(features[test]) == y[test]).mean())


def our_probe(features, subjects, labels, split, kind, grid, seed=0) -> dict:
    folds = _folds(np.sort(np.concatenate([split["train"], split["val"]])), labels, kind, 5, seed)
    metrics, _ = probe_one(features, subjects, labels, split, kind, grid, folds=folds, seed=seed)
    return metrics


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--results", default="results")
    parser.add_argument("--config", default="config/config.yaml")
    parser.add_argument("--study", default="demo")
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    config = load_config(args.config)
    results = Path(args.results)
    shards, splits = str(results / "shards"), str(results / "splits")
    grid = config["probe"]["strengths"]
    size = max(config["splits"]["pretrain_sizes"])
    labels = subjects_from_shards(shard_paths(shards))
    export = json.loads((results / "brainmarks" / "export.json").read_text())
    parts = {"train": "train", "val": "validation", "test": "test"}
    split = {ours: np.array(export["split_subjects"][theirs]) for ours, theirs in parts.items()}
    sex = labels["sex_bi"].dropna().astype(int)
    print(f"1. sex accuracy on the export's split (seed {export['split_seed']}): ours / Brainmarks' pipeline")
    for model in config["pretrain"]["objectives"]:
        run = results / "embeddings" / "pretrain" / model / f"n-{size}_seed-0" / "features.h5"
        table = read_features(run)
        crops, subjects, runs = table.matrix("cls", -1), table.subjects, table.extra["run_id"]
        means, mean_subjects = run_means(crops, subjects, runs)
        plugin, plugin_subjects = plugin_rows(results / "pretrain" / model / f"n-{size}_seed-0" / "encoder.pt",
                                              shards, splits, export["frames"])
        for name, (x, s) in {"crop rows": (crops, subjects), "mean per run": (means, mean_subjects),
                             f"mean over the first {export['frames']} TRs": (plugin, plugin_subjects)}.items():
            ours = our_probe(x, s, sex, split, "classification", grid)["accuracy"]
            print(f"   {model:16s} {name:28s} {ours:.3f} / {brainmarks_pipeline(x, s, sex, split):.3f}")
    print("2. our probe over every split seed and pretraining seed: crop rows / mean per run")
    rows = []
    for model in config["pretrain"]["objectives"]:
        for seed in config["splits"]["pretrain_seeds"]:
            table = read_features(results / "embeddings" / "pretrain" / model / f"n-{size}_seed-{seed}" / "features.h5")
            for feature in ("cls", "mean"):
                crops, subjects = table.matrix(feature, -1), table.subjects
                means, mean_subjects = run_means(crops, subjects, table.extra["run_id"])
                for task, (column, kind, metric) in TASKS.items():
                    label = labels[column].reindex(np.unique(subjects)).dropna()
                    label = label.astype(int) if kind == "classification" else label
                    for split_seed in config["probe"]["split_seeds"]:
                        parts = split_probe_subjects(label, kind, config["splits"]["probe_proportions"], split_seed)
                        crop_rows = our_probe(crops, subjects, label, parts, kind, grid, split_seed)
                        mean_per_run = our_probe(means, mean_subjects, label, parts, kind, grid, split_seed)
                        rows.append({"model": model, "feature": feature, "task": task,
                                     "crop_rows": crop_rows[metric], "mean_per_run": mean_per_run[metric]})
    print(pd.DataFrame(rows).groupby(["model", "feature", "task"]).mean().round(3).to_string())


if __name__ == "__main__":
    main()
