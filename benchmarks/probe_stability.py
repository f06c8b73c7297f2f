"""How much do probe scores move when the features move by floating-point rounding?

Probes one feature file as rule ``probe`` does (every task of the config, its split seeds and
strength grid, the last layer's ``cls_avg`` or the connectivity ``fc``), then again with the features
multiplied by (1 + eps * noise), for each selection rule. Reports, per eps and rule, how many strength
choices changed and the largest and mean change of a test score, and the time of one pass.

    python benchmarks/probe_stability.py results/embeddings/random/semantoks-tiny_seed-21/features.h5 \
        results/shards resources/synthetic/ground_truth/latents.tsv
"""

import argparse
import inspect
import time

import numpy as np

from brainscale.config import load_config
from brainscale.probing.embeddings import FeatureTable, read_features
from brainscale.probing.probes import SELECTION_METRIC, latent_labels, probe_features, resolve_tasks
from brainscale.shards.reader import shard_paths, subjects_from_shards


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("features")
    parser.add_argument("shards")
    parser.add_argument("latents", nargs="?")
    parser.add_argument("--config", default="config/config.yaml")
    parser.add_argument("--eps", type=float, nargs="+", default=[1e-6, 1e-3])
    parser.add_argument("--draws", type=int, default=1, help="noise draws per eps (each its own seed)")
    args = parser.parse_args()

    config = load_config(args.config)  # the probe settings of the demo (an older checkout: its own schema)
    probe = config["probe"]
    table = read_features(args.features)
    name = "cls_avg" if "cls_avg" in table.names else table.names[0]
    layer = table.n_layers - 1
    features = table.matrix(name, layer)
    labels = subjects_from_shards(shard_paths(args.shards))
    tasks = resolve_tasks(probe["tasks"], config["shards"]["labels"])
    if args.latents:
        truth = latent_labels(args.latents)
        labels = labels.join(truth, how="left")
        tasks.update({column: {"label": column, "kind": "regression"} for column in truth.columns})
    print(f"{args.features}: feature {name}, layer {layer + 1}, {features.shape[0]} rows x {features.shape[1]}")

    def run(matrix, selection):
        one = FeatureTable(table.subjects, {name: matrix[:, None]})
        start = time.perf_counter()
        # an older checkout (PYTHONPATH=<it>/src) has no selection argument: its rule is "best"
        extra = {"selection": selection} if "selection" in inspect.signature(probe_features).parameters else {}
        metrics, _ = probe_features(one, labels, tasks, split_seeds=probe["split_seeds"],
                                    proportions=config["splits"]["probe_proportions"], grid=probe["strengths"],
                                    layers="last", n_folds=probe["cv_folds"], subject_reid=False, **extra)
        metrics["score"] = [row[SELECTION_METRIC[row["kind"]]] for _, row in metrics.iterrows()]
        return metrics, time.perf_counter() - start

    noises = [np.random.default_rng(draw).standard_normal(features.shape) for draw in range(args.draws)]
    print(f"per eps, the sum over {args.draws} noise draw(s) of the strength choices that changed, and the largest and "
          "mean change of a test score")
    print("selection  eps      strength changes  max |score change|  mean |score change|  seconds")
    selections = ("best", "one_se") if "selection" in inspect.signature(probe_features).parameters else ("best",)
    for selection in selections:
        reference, seconds = run(features, selection)
        for eps in args.eps:
            changed, deltas = 0, []
            for noise in noises:
                moved, _ = run(features * (1 + eps * noise), selection)
                changed += int((moved["strength"].to_numpy() != reference["strength"].to_numpy()).sum())
                deltas.append(np.abs(moved["score"].to_numpy() - reference["score"].to_numpy()))
            deltas = np.concatenate(deltas)
            print(f"{selection:9s}  {eps:7.0e}  {changed:4d} of {len(deltas):4d}  {deltas.max():18.4f}  "
                  f"{deltas.mean():19.5f}  {seconds:7.1f}")


if __name__ == "__main__":
    main()
