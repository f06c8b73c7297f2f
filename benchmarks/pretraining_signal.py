"""Does pretraining learn anything a probe can read? One subset, several recipes, same probes.

For each recipe (pretrain settings overrides, JSON), pretrain on one subset, embed the probe
subjects (the pipeline's evaluation crops) and report, next to the random-init encoder of the
same seed and the FC baseline:

- sex balanced accuracy and age R2 of a logistic / ridge probe on subject-mean ``cls_avg``
  (last layer), repeated stratified 5-fold cross-validation over the whole probe pool
  (strength chosen by inner cross-validation), mean and standard error over 10 repeats;
- R2 of every latent trait of the simulator (ground-truth recovery);
- cross-run re-identification top-1 (a crop's nearest neighbour by correlation among other
  subjects' crops and the same subject's other runs);
- the collapse monitors at the end of training.

This is a research script for choosing the demo recipe (the evidence is in config/README.md),
not part of the workflow. Example:

    python benchmarks/pretraining_signal.py --size 128 --threads 2 \
        --recipe '{"name": "reference-views", "options": {"semantoks": {"views": {"mode": "independent"}}}}' \
        --recipe '{"name": "distant", "options": {"semantoks": {"views": {"mode": "distant"}}}}'
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from sklearn.linear_model import LogisticRegressionCV, RidgeCV
from sklearn.model_selection import RepeatedKFold, RepeatedStratifiedKFold, cross_val_predict
from sklearn.metrics import balanced_accuracy_score, r2_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from brainscale.objectives import run_spec
from brainscale.objectives.base import PretrainingData
from brainscale.config import load_config
from brainscale.probing.baselines import fisher_z_connectivity
from brainscale.probing.checkpoints import random_encoder
from brainscale.probing.embeddings import extract_embeddings, probe_dataset
from brainscale.probing.reid import reidentification
from brainscale.shards.reader import shard_paths, subjects_from_shards
from brainscale.export import load_encoder
from brainscale.training.loop import pretrain


def deep_update(base: dict, overrides: dict) -> dict:
    merged = dict(base)
    for key, value in overrides.items():
        merged[key] = deep_update(base[key], value) if isinstance(value, dict) and isinstance(base.get(key), dict) \
            else value
    return merged


def subject_features(table, layer: int = -1):
    features = table.matrix("cls_avg", layer)
    subjects, inverse = np.unique(table.subjects, return_inverse=True)
    means = np.zeros((len(subjects), features.shape[1]))
    np.add.at(means, inverse, features)
    return subjects, means / np.bincount(inverse)[:, None]


def probe_scores(features: np.ndarray, targets: pd.DataFrame, seed: int = 0) -> dict:
    scores = {}
    x = features
    for column in targets.columns:
        y = targets[column].to_numpy()
        keep = np.isfinite(y)
        if column == "sex_bi":
            model = make_pipeline(StandardScaler(), LogisticRegressionCV(Cs=np.logspace(-4, 2, 7), max_iter=3000))
            values = []
            for repeat in range(10):
                splitter = RepeatedStratifiedKFold(n_splits=5, n_repeats=1, random_state=seed + repeat)
                predicted = cross_val_predict(model, x[keep], y[keep].astype(int), cv=splitter)
                values.append(balanced_accuracy_score(y[keep].astype(int), predicted))
        else:
            model = make_pipeline(StandardScaler(), RidgeCV(alphas=np.logspace(-1, 6, 15)))
            values = []
            for repeat in range(10):
                splitter = RepeatedKFold(n_splits=5, n_repeats=1, random_state=seed + repeat)
                predicted = cross_val_predict(model, x[keep], y[keep], cv=splitter)
                values.append(r2_score(y[keep], predicted))
        scores[column] = float(np.mean(values))
        scores[column + "_se"] = float(np.std(values) / np.sqrt(len(values)))
    return scores


def train_supervised(settings: dict, shards: Path, subjects, label: str, steps: int, lr: float, batch: int):
    """The ceiling control: the same encoder trained to predict ``label`` from single crops (cross-entropy
    on [mean token, CLS] through a linear head), on the same subjects."""
    from brainscale.shards.reader import ShardDataset

    encoder = random_encoder(run_spec(settings), PretrainingData(shards, (), 0), settings["seed"])
    values = subjects_from_shards(shard_paths(shards), labels=[label])[label]
    crops = ShardDataset(shard_paths(shards), subjects, seed=settings["seed"], preload=True)
    targets = torch.tensor(values.loc[crops.subject_ids].to_numpy(), dtype=torch.long)
    head = torch.nn.Linear(2 * encoder.config.width, int(targets.max()) + 1)
    optimizer = torch.optim.AdamW(list(encoder.parameters()) + list(head.parameters()), lr=lr, weight_decay=0.05)
    generator = torch.Generator().manual_seed(0)
    encoder.train()
    for step in range(steps):
        crops.set_epoch(step)
        items = torch.randint(len(crops), (batch,), generator=generator).tolist()
        x = torch.stack([crops[i][0] for i in items])
        missing = torch.stack([crops[i][1] for i in items])
        tokens = encoder(x, missing_channels=missing)
        logits = head(torch.cat([tokens[:, 1:].mean(1), tokens[:, 0]], dim=1))
        loss = torch.nn.functional.cross_entropy(logits, targets[items])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return encoder.eval(), float(loss)


def evaluate(encoder, dataset, targets) -> dict:
    with torch.no_grad():
        table = extract_embeddings(encoder, dataset, batch_size=64)
    subjects, means = subject_features(table)
    result = probe_scores(means, targets.loc[subjects])
    result["reid"] = reidentification(table.matrix("cls_avg", -1), table.subjects, table.extra["run_id"])["top1"]
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="config/config.yaml")
    parser.add_argument("--results", default="results")
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--seed", type=int, default=0, help="pretraining subset seed")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--recipe", action="append", default=[], help="JSON overrides of pretrain (with a name)")
    parser.add_argument("--output", default="benchmarks/output/pretraining_signal")
    parser.add_argument("--no-baselines", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    config = load_config(args.config)
    shards, splits = Path(args.results) / "shards", Path(args.results) / "splits"
    dataset = probe_dataset(shards, splits)
    labels = subjects_from_shards(shard_paths(shards), labels=["sex_bi", "age"])
    latents_path = Path(config["simulate"]["output_dir"]) / "ground_truth" / "latents.tsv"
    targets = labels
    if latents_path.is_file():
        latents = pd.read_csv(latents_path, sep="\t").set_index("participant_id")
        latents.index = latents.index.astype(str)
        targets = labels.join(latents[[c for c in latents.columns if c.startswith("latent_")]], how="left")
    subjects = np.load(splits / f"pretrain_n-{args.size}_seed-{args.seed}.npy").astype(str)
    rows = []
    if not args.no_baselines:
        fc = []
        for position, runs in enumerate(dataset.runs_of_subject):
            fc.append(np.mean([fisher_z_connectivity(*dataset.read_run(run)) for run in runs], axis=0))
        fc_rows = [fisher_z_connectivity(*dataset.read_run(run)) for run in range(len(dataset.runs))]
        fc_subjects = np.asarray([dataset.subject_ids[dataset.runs[r][3]] for r in range(len(dataset.runs))])
        result = probe_scores(np.asarray(fc), targets.loc[dataset.subject_ids])
        result["reid"] = reidentification(np.asarray(fc_rows), fc_subjects, np.arange(len(fc_rows)))["top1"]
        rows.append({"recipe": "FC", **result})
        print(rows[-1], flush=True)
    for text in args.recipe:
        recipe = json.loads(text)
        name = recipe.pop("name")
        settings = deep_update(dict(config["pretrain"], device="cpu"), recipe)
        if not args.no_baselines or recipe.get("random"):
            encoder = random_encoder(run_spec(settings), PretrainingData(shards, (), 0), settings["seed"])
            rows.append({"recipe": f"{name} (random init)", **evaluate(encoder.eval(), dataset, targets)})
            print(rows[-1], flush=True)
        started = time.perf_counter()
        if "supervised" in recipe:
            encoder, loss = train_supervised(settings, shards, subjects, recipe["supervised"], recipe["steps"],
                                             recipe.get("lr", 1e-3), recipe.get("batch", 16))
            rows.append({"recipe": name, **evaluate(encoder, dataset, targets),
                         "train_s": time.perf_counter() - started, "final_loss": loss})
            print(rows[-1], flush=True)
            continue
        output = Path(args.output) / name
        export = pretrain(run_spec(settings), shards, subjects, output, log=lambda line: None)
        seconds = time.perf_counter() - started
        log = pd.read_csv(output / "log.csv")
        monitors = log.dropna(subset=["cls_rank"]).iloc[-1]
        rows.append({"recipe": name, **evaluate(load_encoder(export), dataset, targets), "train_s": seconds,
                     "final_loss": float(log["loss"].tail(20).mean()), "cls_std": monitors["cls_std"],
                     "cls_rank": monitors["cls_rank"]})
        print(rows[-1], flush=True)
    frame = pd.DataFrame(rows)
    Path(args.output).mkdir(parents=True, exist_ok=True)
    frame.to_csv(Path(args.output) / "summary.tsv", sep="\t", index=False, float_format="%.4f", mode="a")
    print(frame.to_string(float_format=lambda v: f"{v:.3f}"))


if __name__ == "__main__":
    main()
