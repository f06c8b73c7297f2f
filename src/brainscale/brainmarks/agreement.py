"""Do Brainmarks and brainscale give the same answer on the same split? (rule ``brainmarks_agreement``)

Brainmarks' ``main_logistic`` runs a model on the export (:mod:`.export`) and scores its test rows
(runs, the first ``brainmarks.frames`` TRs of each) with a standard deviation from 500 bootstrap
resamples. brainscale's probe of the matching features, at the export's task and split seed, has
subject-level test predictions (``predictions.tsv.gz``); their accuracy gets the same bootstrap.
The two agree when the difference lies within 1.96 standard deviations of the difference
(the two bootstrap deviations added in quadrature): the same split, two probe protocols (their
LogisticRegressionCV on runs, our grouped strength selection on subjects).
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd

from . import BrainmarksError
from .export import ROOT_VARIABLE

__all__ = ["run_main_logistic", "our_test_accuracy", "agreement_row", "write_agreement", "AGREEMENT_Z"]

AGREEMENT_Z = 1.96
BOOTSTRAP = 500  # as main_logistic's bootstrap_ci


def run_main_logistic(model: str, dataset: str, export_root: str | Path, *, model_kwargs: dict | None = None,
                      representation: str = "cls", threads: int = 1, seed: int = 4466, overrides: tuple = (),
                      log=None) -> pd.DataFrame:
    """Run ``python -m brainmarks.main_logistic`` on CPU (fixed split only) and return its ``eval_table.csv``.

    ``overrides`` are more of its ``key=value`` settings (e.g. ``Cs=4``); its defaults otherwise.
    """
    overrides = ["device=cpu", f"num_workers={threads}", "amp=false", "n_trials=0", f"seed={seed}", *overrides]
    overrides += [f"model_kwargs.{key}={value}" for key, value in (model_kwargs or {}).items()]
    with tempfile.TemporaryDirectory(prefix="brainmarks-") as output:
        command = [sys.executable, "-m", "brainmarks.main_logistic", model, representation, dataset,
                   "--overrides", f"output_root={output}", *overrides]
        environment = dict(os.environ, **{ROOT_VARIABLE: str(Path(export_root).resolve())})
        result = subprocess.run(command, capture_output=True, text=True, env=environment)
        if log is not None:
            log(result.stdout[-4000:])
        tables = sorted(Path(output).rglob("eval_table.csv"))
        if result.returncode != 0 or not tables:
            raise BrainmarksError(f"brainmarks.main_logistic {model} {representation} {dataset} failed "
                                  f"(exit {result.returncode}):\n{result.stderr[-3000:]}")
        return pd.read_csv(tables[0])


def _bootstrap_std(correct: np.ndarray, y_true: np.ndarray, seed: int) -> float:
    """Standard deviation of the accuracy over stratified bootstrap resamples (main_logistic's scheme)."""
    rng = np.random.default_rng(seed)
    values = []
    for _ in range(BOOTSTRAP):
        index = np.concatenate([rng.choice(members, len(members))
                                for members in (np.flatnonzero(y_true == c) for c in np.unique(y_true))])
        values.append(correct[index].mean())
    return float(np.std(values))


def our_test_accuracy(predictions: pd.DataFrame, *, task: str, split_seed: int, feature: str, layer: int | None = None,
                      seed: int = 0) -> dict:
    """Test accuracy (subjects) of one brainscale probe, with its bootstrap standard deviation.

    ``layer`` None takes the last layer.
    """
    rows = predictions[(predictions["task"] == task) & (predictions["split_seed"] == split_seed) &
                       (predictions["feature"] == feature) & (predictions["part"] == "test")]
    if layer is None and len(rows):
        layer = int(rows["layer"].max())
    rows = rows[rows["layer"] == layer]
    if rows.empty:
        raise BrainmarksError(f"no test predictions for task {task}, split seed {split_seed}, feature {feature}, "
                              f"layer {layer}: probe that task at that seed (probe.tasks, probe.split_seeds).")
    y_true, y_pred = rows["y_true"].to_numpy(), rows["y_pred"].to_numpy()
    correct = (y_true == y_pred).astype(float)
    return {"accuracy": float(correct.mean()), "accuracy_std": _bootstrap_std(correct, y_true, seed),
            "n_test": len(rows), "layer": layer, "subjects": sorted(rows["subject"].astype(str))}


def agreement_row(name: str, theirs: pd.DataFrame, ours: dict, *, export_test_subjects) -> dict:
    """One row of the agreement table: both accuracies, their deviations, the difference and the verdict."""
    test = theirs[theirs["split"] == "test"].iloc[0]
    if sorted(map(str, export_test_subjects)) != ours["subjects"]:
        raise BrainmarksError(f"{name}: our probe's test subjects are not the export's; rerun brainmarks_export "
                              "with the probe's task and split seed (brainmarks.split_task, brainmarks.split_seed).")
    difference = ours["accuracy"] - float(test["acc"])
    scale = float(np.hypot(ours["accuracy_std"], float(test["acc_std"])))
    return {"comparison": name, "brainmarks_model": test["model"], "dataset": test["dataset"],
            "brainmarks_accuracy": float(test["acc"]), "brainmarks_std": float(test["acc_std"]),
            "brainmarks_balanced_accuracy": float(test["bacc"]), "brainscale_accuracy": ours["accuracy"],
            "brainscale_std": ours["accuracy_std"], "brainscale_layer": ours["layer"], "difference": difference,
            "tolerance": AGREEMENT_Z * scale, "agree": bool(abs(difference) <= AGREEMENT_Z * scale),
            "brainscale_test_subjects": ours["n_test"]}


def write_agreement(export_root: str | Path, comparisons: list[dict], output: str | Path, *, threads: int = 1,
                    seed: int = 0, log=None) -> pd.DataFrame:
    """Run every comparison and write the agreement table (TSV).

    Each comparison is ``{name, model, model_kwargs, predictions, feature}``: a Brainmarks model
    run by ``main_logistic`` on the export, and the brainscale probe predictions of the matching
    features (``feature`` at the last layer).
    """
    import json

    from ..io import atomic_file

    summary = json.loads((Path(export_root) / "export.json").read_text())
    task, split_seed = summary["split_task"], summary["split_seed"]
    rows = []
    for comparison in comparisons:
        theirs = run_main_logistic(comparison["model"], f"brainscale_{task}", export_root,
                                   model_kwargs=comparison.get("model_kwargs"), threads=threads, log=log)
        ours = our_test_accuracy(pd.read_csv(comparison["predictions"], sep="\t"), task=task, split_seed=split_seed,
                                 feature=comparison["feature"], seed=seed)
        row = agreement_row(comparison["name"], theirs, ours, export_test_subjects=summary["split_subjects"]["test"])
        row.update(task=task, split_seed=split_seed, brainmarks_test_runs=summary["runs"]["test"])
        rows.append(row)
        if log is not None:
            log(f"{comparison['name']}: Brainmarks {row['brainmarks_accuracy']:.3f} +- {row['brainmarks_std']:.3f}, "
                f"brainscale {row['brainscale_accuracy']:.3f} +- {row['brainscale_std']:.3f}: "
                f"{'agree' if row['agree'] else 'DISAGREE'}")
    table = pd.DataFrame(rows)
    with atomic_file(output) as temporary:
        table.to_csv(temporary, sep="\t", index=False, float_format="%.4f")
    return table
