"""The objective interface: run names, Brain-Semantoks unchanged on it, options, exports of every objective."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from brainscale.objectives import available_objectives, parse_run_name, run_settings
from brainscale.training.errors import TrainingError
from brainscale.training.loop import load_encoder, pretrain
from tests.test_training import SETTINGS, subjects_of

DATA = Path(__file__).parent / "data"


def test_brain_semantoks_on_the_interface_reproduces_the_losses_before_it(shards, tmp_path):
    # tests/data/semantoks-reference-*: this run (first 4 subjects, 8 steps) with the training loop
    # that knew only Brain-Semantoks, before objectives became plug-ins
    export = pretrain(dict(SETTINGS, objective="semantoks"), shards, subjects_of(shards)[:4], tmp_path / "run",
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
    settings = run_settings(SETTINGS, "semantoks-small")
    assert settings["objective"] == "semantoks" and settings["model"] == "small"
    for bad, words in (("semantoks", "objective-size"), ("nosuch-tiny", "unknown objective 'nosuch'"),
                       ("semantoks-huge", "no size 'huge'")):
        with pytest.raises(TrainingError, match=words):
            parse_run_name(bad)


def test_options_override_the_shared_training_keys_for_one_objective_only():
    settings = dict(SETTINGS, options={"semantoks": {"base_lr": 0.5}})
    assert run_settings(settings, "semantoks-tiny")["base_lr"] == 0.5
    with pytest.raises(TrainingError, match="unknown keys"):
        available_objectives()["semantoks"].check(dict(settings, options={"semantoks": {"nosuch": 1}}))
