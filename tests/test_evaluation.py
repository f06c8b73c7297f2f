"""The held-out objective loss: fixed inputs, scored without touching training, named bad input."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from brainscale.errors import TrainingError
from brainscale.export import load_encoder
from brainscale.objectives import run_spec
from brainscale.training.evaluation import (HeldOutLoss, evaluation_columns, evaluation_steps,
                                            evaluation_subjects)
from brainscale.training.loop import pretrain
from brainscale.training.setup import set_up
from tests.test_training import SETTINGS, subjects_of

EVALUATED = dict(SETTINGS, evaluation=dict(SETTINGS["evaluation"], subjects=2, samples=6, points=2))


def test_steps_and_columns():
    assert evaluation_steps(600, 4) == [150, 300, 450, 600]
    assert evaluation_steps(3, 8) == [1, 2, 3]  # never more points than steps
    assert evaluation_columns(("cls", "mask")) == ["val_loss", "val_cls", "val_mask", "seen_loss", "seen_cls",
                                                   "seen_mask"]


def test_the_held_out_loss_is_logged_and_leaves_training_as_it_was(shards, tmp_path):
    subjects, held_out = subjects_of(shards)[:4], subjects_of(shards)[4:6]
    scored = pretrain(run_spec(EVALUATED), shards, subjects, tmp_path / "scored", evaluation_subjects=held_out,
                      log=lambda line: None)
    plain = pretrain(run_spec(EVALUATED), shards, subjects, tmp_path / "plain", log=lambda line: None)
    log = pd.read_csv(tmp_path / "scored" / "log.csv")
    evaluated = log["val_loss"].notna()
    assert list(log.loc[evaluated, "step"]) == [3, 7]  # after 4 and 8 of the 8 steps
    assert np.isfinite(log.loc[evaluated, ["val_loss", "val_cls", "seen_loss", "seen_cls"]]).all().all()
    # Scoring draws nothing training uses and leaves the model as it was: same losses, same weights.
    np.testing.assert_array_equal(log["loss"], pd.read_csv(tmp_path / "plain" / "log.csv")["loss"])
    a, b = load_encoder(scored).state_dict(), load_encoder(plain).state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert pd.read_csv(tmp_path / "plain" / "log.csv")["val_loss"].isna().all()
    from brainscale.plotting.training import plot_learning_curves

    outputs = [tmp_path / "curves.png", tmp_path / "curves.pdf"]
    plot_learning_curves({("semantoks-tiny", 4, 0): tmp_path / "scored" / "log.csv",
                          ("semantoks-tiny", 8, 0): tmp_path / "plain" / "log.csv"}, outputs)
    assert all(path.stat().st_size > 5000 for path in outputs)


def test_every_score_sees_the_same_inputs(shards):
    subjects, held_out = list(subjects_of(shards)[:4]), list(subjects_of(shards)[4:6])
    training = set_up(run_spec(EVALUATED), shards, subjects)
    scorer = HeldOutLoss(training.objective, training.budget, torch.device("cpu"), held_out=held_out,
                         subset=subjects, samples=6, seed=0)
    first, again = scorer.score(training.model), scorer.score(training.model)
    assert first == again and first["val_loss"] != first["seen_loss"]
    assert training.model.training  # back in training mode
    other_seed = HeldOutLoss(training.objective, training.budget, torch.device("cpu"), held_out=held_out,
                             subset=subjects, samples=6, seed=1)
    assert other_seed.score(training.model)["val_loss"] != first["val_loss"]
    with pytest.raises(TrainingError, match="overlap the pretraining subset"):
        HeldOutLoss(training.objective, training.budget, torch.device("cpu"), held_out=subjects[:1] + held_out,
                    subset=subjects, samples=6, seed=0)


def test_evaluation_subjects_come_from_the_probe_set(tmp_path):
    probe = {"train": ["sub-01", "sub-02", "sub-03"], "val": ["sub-04"], "test": ["sub-05", "sub-06"]}
    for part, subjects in probe.items():
        np.save(tmp_path / f"probe_{part}.npy", np.array(subjects))
    chosen = evaluation_subjects(tmp_path, 4, seed=0)
    assert len(chosen) == 4 and chosen == sorted(chosen) and set(chosen) <= {s for v in probe.values() for s in v}
    assert chosen == evaluation_subjects(tmp_path, 4, seed=0) and chosen != evaluation_subjects(tmp_path, 4, seed=3)
    # QC left fewer probe subjects than asked: all of them, and the log says so; fewer than two: none.
    messages = []
    assert len(evaluation_subjects(tmp_path, 7, seed=0, log=messages.append)) == 6
    assert "pretrain.evaluation.subjects is 7, but the probe set" in messages[0] and "all of them" in messages[0]
    for part in probe:
        np.save(tmp_path / f"probe_{part}.npy", np.array(["sub-01"] if part == "train" else [], dtype=str))
    assert evaluation_subjects(tmp_path, 2, seed=0, log=messages.append) == [] and "too few" in messages[-1]


def test_an_evaluation_set_the_demo_cannot_hold_is_named_before_any_job():
    from brainscale.config import ConfigError, validate_config

    with pytest.raises(ConfigError, match=r"'pretrain.evaluation.subjects': 200 evaluation subjects, but the probe "
                                          r"set of 120 simulated subjects holds at most 42"):
        validate_config({"pretrain": {"evaluation": {"subjects": 200}}})
