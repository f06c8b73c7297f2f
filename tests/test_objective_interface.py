"""The objective interface: run names, Brain-Semantoks unchanged on it, options, exports of every objective."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from brainscale.errors import ConfigError
from brainscale.objectives import available_objectives, get_objective, parse_run_name, run_spec
from brainscale.export import load_encoder
from brainscale.training.loop import pretrain
from tests.test_training import SETTINGS, subjects_of

DATA = Path(__file__).parent / "data"


def test_brain_semantoks_on_the_interface_reproduces_the_losses_before_it(shards, tmp_path):
    # tests/data/semantoks-reference-*: this run (first 4 subjects, 8 steps) with the training loop
    # that knew only Brain-Semantoks, before objectives became plug-ins (issue 20; it matched). Recorded
    # again on 2026-12-06 when the simulator's data changed (issue 21: individual modes, age on one
    # scale), with the loop unchanged, so that it still guards the Semantoks losses and weights.
    export = pretrain(run_spec(SETTINGS, "semantoks-tiny"), shards, subjects_of(shards)[:4], tmp_path / "run",
                      log=lambda line: None)
    log = pd.read_csv(tmp_path / "run" / "log.csv")
    reference = pd.read_csv(DATA / "semantoks-reference-log.csv")
    for column in ("loss", "cls", "network", "mask", "lr", "momentum", "cls_std", "cls_rank"):
        np.testing.assert_allclose(log[column], reference[column], rtol=1e-5, atol=1e-6, err_msg=column)
    sums = json.loads((DATA / "semantoks-reference-sums.json").read_text())
    state = load_encoder(export).state_dict()
    assert sorted(state) == sorted(sums)
    np.testing.assert_allclose([float(state[k].double().sum()) for k in sorted(sums)],
                               [sums[k] for k in sorted(sums)], rtol=1e-5, atol=1e-5)


def test_run_names_select_an_objective_and_a_size():
    assert "semantoks" in available_objectives()
    objective, size = parse_run_name("semantoks-tiny")
    assert objective.name == "semantoks" and size == "tiny"
    run = run_spec(SETTINGS, "semantoks-small")
    assert run.objective == "semantoks" and run.size == "small" and run.architecture["width"] == 256
    for bad, words in (("semantoks", "objective-size"), ("nosuch-tiny", "unknown objective 'nosuch'"),
                       ("semantoks-huge", "no size 'huge'")):
        with pytest.raises(ConfigError, match=words):
            parse_run_name(bad)


def test_options_override_the_shared_training_keys_for_one_objective_only():
    settings = dict(SETTINGS, options={"semantoks": {"base_lr": 0.5}})
    assert run_spec(settings, "semantoks-tiny").training["base_lr"] == 0.5
    # another run listed, another objective's options changed: this run's settings stay the same
    other = dict(settings, objectives=["semantoks-tiny", "jepa-tiny"],
                 options={**settings["options"], "jepa": {"base_lr": 0.1}})
    assert run_spec(other, "semantoks-tiny") == run_spec(dict(settings, objectives=["semantoks-tiny"]),
                                                         "semantoks-tiny")
    assert run_spec(other, "jepa-tiny").training["base_lr"] == 0.1


@pytest.mark.parametrize("name", sorted(available_objectives()))
def test_every_objective_trains_exports_and_is_probed_through_one_interface(name, shards, tmp_path):
    """Whatever the objective: the loop trains it, its export loads, embed reads every layer's
    features, and its random init is the weights its pretraining starts from."""
    from brainscale.objectives.base import PretrainingData, network_map_of
    from brainscale.probing.checkpoints import load_checkpoint, random_encoder
    from brainscale.probing.embeddings import extract_embeddings
    from brainscale.shards.reader import ShardDataset, shard_paths

    objective = available_objectives()[name]
    size = "tiny" if "tiny" in objective.presets else next(iter(objective.presets))
    subjects, held_out = subjects_of(shards)[:4], subjects_of(shards)[4:6]
    run = run_spec(dict(SETTINGS, budget=dict(SETTINGS["budget"], total=2, warmup=1),
                        evaluation=dict(SETTINGS["evaluation"], subjects=2, samples=4, points=1)), f"{name}-{size}")
    export = pretrain(run, shards, subjects, tmp_path / "run", evaluation_subjects=held_out, log=lambda line: None)
    log = pd.read_csv(tmp_path / "run" / "log.csv")
    assert list(log.columns[4:4 + len(objective.loss_terms)]) == list(objective.loss_terms)
    assert np.isfinite(log["loss"]).all() and np.isfinite(log["cls_rank"].iloc[0])
    # the held-out loss, and the same loss on the subset, after the last step only
    assert np.isfinite(log[["val_loss", "seen_loss"]].iloc[-1]).all() and log["val_loss"].iloc[:-1].isna().all()
    encoder = load_checkpoint(export, network_map_of(shards))
    dataset = ShardDataset(shard_paths(shards), subjects[:2], crop_length=encoder.config.crop_length, crops="eval",
                           n_eval_crops=2)
    table = extract_embeddings(encoder, dataset, batch_size=4)
    assert table.features["cls"].shape == (len(dataset.runs) * 2, encoder.config.depth, encoder.config.width)
    assert np.isfinite(table.matrix("cls_avg")).all()
    data = PretrainingData(shards, tuple(subjects), SETTINGS["seed"])
    start = random_encoder(run, data, SETTINGS["seed"]).state_dict()
    import torch

    torch.manual_seed(SETTINGS["seed"])
    built = get_objective(name)(run, data).build().encoder.state_dict()
    assert all(torch.equal(start[key], built[key]) for key in built)


def test_pretraining_data_takes_a_string_folder_and_an_array_of_subjects(shards):
    from brainscale.objectives.base import PretrainingData

    data = PretrainingData(str(shards), np.array(["a", "b"]), 0)
    assert data.shard_folder == Path(shards) and data.subjects == ("a", "b")
    assert len(data.network_map) == 457


@pytest.mark.parametrize("name", ["jepa-tiny", "mae-tiny"])
def test_exports_written_before_objectives_had_folders_still_load(name):
    # tests/data/exports-before-folders: random-init exports written by the code of commit ded4334
    import torch

    path = DATA / "exports-before-folders" / f"{name}.pt"
    payload = torch.load(path, weights_only=False)
    encoder = load_encoder(path)
    assert payload["objective"] == name.split("-")[0] and encoder.config.to_dict() == payload["config"]
    assert all(torch.equal(encoder.state_dict()[key], value) for key, value in payload["state_dict"].items())


def test_a_first_format_semantoks_export_still_loads(tmp_path):
    import torch

    from brainscale.export import save_encoder
    from brainscale.objectives.semantoks.model import SemantoksEncoder
    from brainscale.objectives.semantoks.spec import MODEL_SIZES, SemantoksConfig

    save_encoder(SemantoksEncoder(SemantoksConfig(**MODEL_SIZES["tiny"])), tmp_path / "new.pt", objective="semantoks")
    payload = torch.load(tmp_path / "new.pt", weights_only=False)
    old = {"format": "brainscale-semantoks-encoder-1", "config": payload["config"], "state_dict": payload["state_dict"]}
    torch.save(old, tmp_path / "old.pt")
    assert load_encoder(tmp_path / "old.pt").config.width == MODEL_SIZES["tiny"]["width"]
