"""Brainmarks interoperability: our encoders in its model tests, our probe set as its dataset, its models in
our probes."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from brainscale.brainmarks import BrainmarksError, require_brainmarks, space_channels
from brainscale.brainmarks.agreement import agreement_row, our_test_accuracy, run_main_logistic
from brainscale.brainmarks.export import export_probe_set, load_export
from brainscale.config import validate_config
from brainscale.objectives import run_spec
from brainscale.objectives.base import PretrainingData
from brainscale.probing.baselines import connectivity_features, fisher_z_connectivity
from brainscale.probing.checkpoints import write_random_encoder
from brainscale.probing.embeddings import embed_checkpoint, probe_dataset, read_features
from brainscale.probing.probes import probe_features
from brainscale.shards.reader import shard_paths, subjects_from_shards
from brainscale.shards.splits import write_splits
from brainscale.shards.writer import write_shards

CONFIG = validate_config({})
TASKS = {"sex": {"label": "sex_bi", "kind": "classification"}}
FRAMES = 100


N_SUBJECTS = 36


@pytest.fixture(scope="module")
def shards(preprocessed, tmp_path_factory):
    """Shards of 36 subjects (the minimal simulation's probe set is too small to split by sex), two runs each,
    whose first 120 channels are more correlated for one sex; sub-04's runs and one of sub-09's are too short
    to export."""
    _, _, mapping = preprocessed
    folder = tmp_path_factory.mktemp("bm-runs")
    rng = np.random.default_rng(0)
    files, rows = [], []
    for index in range(N_SUBJECTS):
        subject, sex = f"sub-{index:02d}", "FM"[index % 2]
        rows.append({"participant_id": subject, "sex": sex, "age": 20 + index, "fluid_intelligence": index % 7})
        for run in range(2):
            length = 30 if index == 4 or (index == 9 and run == 0) else 120
            shared = rng.standard_normal(length)
            series = rng.standard_normal((457, length))
            series[:120] += (1.0 if sex == "M" else 0.3) * shared  # a sex-dependent block of connectivity
            series = (series - series.mean(axis=1, keepdims=True)) / series.std(axis=1, keepdims=True)
            path = folder / f"{subject}_run-{run + 1}.npz"
            np.savez(path, timeseries=series.astype(np.float32), channel_missing=np.zeros(457, dtype=bool),
                     repetition_time=np.float64(2.0), source_repetition_time=np.float64(2.0), source=np.str_(path.name),
                     run_id=np.str_(f"{subject}_task-rest_run-{run + 1}"), participant_id=np.str_(subject))
            files.append(path)
    phenotypes = pd.DataFrame(rows).set_index("participant_id")
    output = tmp_path_factory.mktemp("bm-shards") / "shards"
    write_shards(files, phenotypes, mapping, dict(CONFIG["shards"], dtype="float32"), output, log=lambda line: None)
    return output


@pytest.fixture(scope="module")
def splits(shards, tmp_path_factory):
    folder = tmp_path_factory.mktemp("splits") / "splits"
    subjects = subjects_from_shards(shard_paths(shards), labels=list(CONFIG["shards"]["labels"]))
    settings = dict(CONFIG["splits"], probe_fraction=0.9, probe_proportions=[1, 1, 1], stratify=None,
                    pretrain_sizes=[2])
    write_splits(subjects, settings, folder)
    return folder


@pytest.fixture(scope="module")
def export(shards, splits, tmp_path_factory):
    root = tmp_path_factory.mktemp("brainmarks") / "brainmarks"
    summary = export_probe_set(shards, splits, root, tasks=TASKS | {"age": {"label": "age", "kind": "regression"}},
                               labels_config=CONFIG["shards"]["labels"], proportions=[1, 1, 1], split_seed=0,
                               frames=FRAMES)
    return root, summary


def _environment(**variables) -> dict:
    return dict(os.environ, **{key: str(value) for key, value in variables.items()})


def test_our_encoders_pass_brainmarks_model_tests(shards, tmp_path):
    tiny = run_spec(CONFIG["pretrain"], "semantoks-tiny")
    run = tmp_path / "results" / "pretrain" / "semantoks-tiny" / "n-2_seed-0" / "encoder.pt"
    write_random_encoder(tiny, PretrainingData(shards, (), 0), 3, run)
    # 'brainscale' from $BRAINSCALE_ENCODER, and the run found under ./results by its own name
    result = subprocess.run([sys.executable, "-m", "brainmarks.models.test_models", "brainscale"], cwd=tmp_path,
                            capture_output=True, text=True, env=_environment(BRAINSCALE_ENCODER=run), timeout=600)
    output = result.stdout + result.stderr
    # it exits 0 even when its tests fail: read the summary line
    assert re.search(r"=+ 4 passed", result.stdout) and not re.search(r"\d+ failed", result.stdout), output[-3000:]
    listed = subprocess.run([sys.executable, "-c", "from brainmarks.models.registry import list_models; "
                             "print(list_models())"], cwd=tmp_path, capture_output=True, text=True)
    assert "brainscale_semantoks-tiny_n-2_seed-0" in listed.stdout


def test_the_export_is_a_brainmarks_dataset_of_our_split(shards, splits, export, monkeypatch):
    root, summary = export
    assert summary["split_task"] == "sex" and set(summary["targets"]) == {"sex", "age_median"}
    assert summary["runs_shorter_than_frames"] == 3
    monkeypatch.setenv("BRAINSCALE_ROOT", str(root))
    from brainmarks.datasets.registry import create_dataset

    full = create_dataset("brainscale", space="schaefer400_tians3_buckner7", target="sex")
    cortex = create_dataset("brainscale", space="schaefer400", target="sex")
    labels = subjects_from_shards(shard_paths(shards))["sex_bi"]
    dataset = probe_dataset(shards, splits, crop_length=1, n_crops=1)
    for split in ("train", "validation", "test"):
        assert len(full[split]) == summary["runs"][split]
        # every subject of our split, but sub-04, whose only run is shorter than the rows
        assert sorted(set(full[split].dataset["sub"])) == [s for s in summary["split_subjects"][split] if s != "sub-04"]
        for index in range(len(full[split])):
            sample, sample_400 = full[split][index], cortex[split][index]
            assert tuple(sample["bold"].shape) == (FRAMES, 457) and tuple(sample_400["bold"].shape) == (FRAMES, 400)
            run = [r for r, name in enumerate(dataset.subject_ids) if name == sample["sub"]]
            assert labels[sample["sub"]] == full[split].labels[sample["target"]]
            np.testing.assert_array_equal(sample_400["bold"].numpy(), sample["bold"][:, :400].numpy())
            assert run
    with pytest.raises(BrainmarksError, match="no channels brainscale writes"):
        load_export(root, "sex", space="a424")
    with pytest.raises(BrainmarksError, match="the export has age_median, sex"):
        load_export(root, "handedness", space="schaefer400")


def test_main_logistic_on_the_export_agrees_with_our_probe(shards, splits, export):
    root, summary = export
    # a coarser C grid and fewer folds than its defaults (10, 5): the same code path, a quarter of the fits
    theirs = run_main_logistic("connectome_schaefer400", "brainscale_sex", root, overrides=("Cs=4", "cv_folds=3"))
    assert set(theirs["split"]) == {"train", "test"}
    table = connectivity_features(probe_dataset(shards, splits, crop_length=1, n_crops=1))
    labels = subjects_from_shards(shard_paths(shards))
    _, predictions = probe_features(table, labels, TASKS, split_seeds=[0], proportions=[1, 1, 1],
                                    grid=CONFIG["probe"]["strengths"], subject_reid=False)
    ours = our_test_accuracy(predictions, task="sex", split_seed=0, feature="fc")
    row = agreement_row("fc", theirs, ours, export_test_subjects=summary["split_subjects"]["test"])
    assert row["agree"], json.dumps(row, default=str)
    with pytest.raises(BrainmarksError, match="not the export's"):
        agreement_row("fc", theirs, ours, export_test_subjects=summary["split_subjects"]["train"])


def test_a_brainmarks_model_is_probed_like_our_encoders(shards, splits, tmp_path):
    settings = dict(CONFIG["embed"], cache_dir=str(tmp_path / "cache"))
    entry = {"format": "brainmarks", "model": "connectome_schaefer400", "model_kwargs": {}}
    output = tmp_path / "external" / "features.h5"
    assert not embed_checkpoint(None, shards, splits, output, settings, checkpoint=entry, name="external/fc400")
    assert embed_checkpoint(None, shards, splits, tmp_path / "again.h5", settings, checkpoint=entry)  # cached
    table = read_features(output)
    dataset = probe_dataset(shards, splits, crop_length=1, n_crops=1)
    assert table.features["cls"].shape == (len(dataset.runs), 1, 400 * 399 // 2)
    # Brainmarks' connectome of the first 400 channels is our Fisher-z connectivity of them, untransformed
    timeseries, missing = dataset.read_run(0)
    ours = np.tanh(fisher_z_connectivity(timeseries[:400], missing[:400]))
    np.testing.assert_allclose(table.features["cls"][0, 0], ours, atol=2e-5)
    metrics, _ = probe_features(table, subjects_from_shards(shard_paths(shards)), TASKS, split_seeds=[0],
                                proportions=[1, 1, 1], grid=CONFIG["probe"]["strengths"], subject_reid=True)
    assert set(metrics["task"]) == {"sex", "subject_reid"}


def test_bad_brainmarks_requests_name_the_fix(shards, splits, tmp_path, monkeypatch):
    with pytest.raises(BrainmarksError, match="no channels brainscale writes.*connectome_schaefer400"):
        space_channels("mni")
    empty = tmp_path / "splits"
    empty.mkdir()
    with pytest.raises(BrainmarksError, match="no probe set.*probe_fraction"):
        export_probe_set(shards, empty, tmp_path / "out", tasks=TASKS, labels_config=CONFIG["shards"]["labels"],
                         proportions=[1, 1, 1], split_seed=0)
    assert not (tmp_path / "out").exists()
    with pytest.raises(BrainmarksError, match="not a classification task"):
        export_probe_set(shards, splits, tmp_path / "out", tasks=TASKS, labels_config=CONFIG["shards"]["labels"],
                         proportions=[1, 1, 1], split_seed=0, split_task="age")
    from brainscale.brainmarks.features import create_brainmarks_model

    with pytest.raises(BrainmarksError, match="no model 'connectome_a424'.*connectome_schaefer400"):
        create_brainmarks_model("connectome_a424")
    import brainmarks.models.registry as registry

    monkeypatch.delattr(registry, "register_model")
    with pytest.raises(BrainmarksError, match="lacks the plugin API.*pip install --no-deps brainmarks==0.1.1"):
        require_brainmarks()
