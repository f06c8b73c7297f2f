"""Pretraining: the loss goes down, a resumed run equals an uninterrupted one, bad input stops early."""

from __future__ import annotations

import os

import numpy as np
import pandas as pd
import pytest
import torch

from brainscale.config import validate_config
from brainscale.models.semantoks import MODEL_SIZES, SemantoksConfig
from brainscale.shards.reader import shard_paths, subjects_from_shards
from brainscale.training.distillation import SelfDistillation
from brainscale.training.loop import TrainingError, load_encoder, pretrain

SETTINGS = dict(validate_config({})["pretrain"], model="tiny", batch_size=2, epochs=4, warmup_epochs=1,
                checkpoint_every=1, device="cpu", base_lr=0.05)


def subjects_of(shards) -> np.ndarray:
    return subjects_from_shards(shard_paths(shards), labels=["age"]).index.to_numpy()


def test_loss_decreases_on_a_small_synthetic_batch():
    torch.manual_seed(0)
    model = SelfDistillation(SemantoksConfig(**MODEL_SIZES["tiny"]))
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    generator = torch.Generator().manual_seed(0)
    views = torch.randn(2, 8, 457, 100, generator=generator)
    missing = torch.zeros(8, 457, dtype=torch.bool)
    losses = []
    for _ in range(30):
        loss = model(views, missing, None, network_weight=0.5, mask_weight=0.5)["total"]
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert np.mean(losses[-5:]) < np.mean(losses[:5]) - 0.1


def test_resumed_training_equals_uninterrupted_training(shards, tmp_path):
    subjects = subjects_of(shards)[:4]
    straight = pretrain(SETTINGS, shards, subjects, tmp_path / "straight", log=lambda line: None)
    assert pretrain(SETTINGS, shards, subjects, tmp_path / "resumed", stop_after_epochs=2,
                    log=lambda line: None) is None
    assert not (tmp_path / "resumed" / "encoder.pt").exists()
    resumed = pretrain(SETTINGS, shards, subjects, tmp_path / "resumed", log=lambda line: None)
    first = pd.read_csv(tmp_path / "straight" / "log.csv")
    second = pd.read_csv(tmp_path / "resumed" / "log.csv")
    assert len(first) == 4 * 2 and list(second["step"]) == list(range(8))  # 4 epochs of 2 steps
    np.testing.assert_array_equal(first["loss"].to_numpy(), second["loss"].to_numpy())
    a, b = load_encoder(straight).state_dict(), load_encoder(resumed).state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert (tmp_path / "straight" / "loss.png").stat().st_size > 5000


def test_export_is_small_and_loads_without_training_code(shards, tmp_path):
    subjects = subjects_of(shards)[:2]
    export = pretrain(dict(SETTINGS, epochs=1), shards, subjects, tmp_path / "run", log=lambda line: None)
    payload = torch.load(export, weights_only=False)
    assert set(payload) == {"format", "config", "state_dict", "trained_steps", "pretraining_subjects"}
    assert export.stat().st_size < (tmp_path / "run" / "checkpoint.pt").stat().st_size / 2
    encoder = load_encoder(export)
    with torch.no_grad():
        assert encoder(torch.randn(2, 457, 100)).shape == (2, 46, 64)


@pytest.mark.parametrize("overrides, subjects, words", [
    ({"batch_size": 16}, 3, "larger than the pretraining subset of 3 subjects"),
    ({}, 0, "subset is empty"),
    ({"architecture": {"token_width": 128}}, 3, "token_width"),
    ({"architecture": {"patch_length": 30}}, 3, "does not divide"),
])
def test_bad_settings_stop_before_training(shards, tmp_path, overrides, subjects, words):
    with pytest.raises(ValueError if "architecture" in overrides else TrainingError, match=words):
        pretrain(dict(SETTINGS, **overrides), shards, subjects_of(shards)[:subjects], tmp_path / "bad",
                 log=lambda line: None)
    assert not (tmp_path / "bad" / "checkpoint.pt").exists()


def test_nan_loss_stops_with_the_step_and_last_checkpoint(shards, tmp_path, monkeypatch):
    subjects = subjects_of(shards)[:2]  # one step per epoch
    real_forward = SelfDistillation.forward
    calls = []

    def poisoned(self, *args, **kwargs):
        losses = real_forward(self, *args, **kwargs)
        calls.append(1)
        if len(calls) == 3:
            losses["total"] = losses["total"] * float("nan")
        return losses

    monkeypatch.setattr(SelfDistillation, "forward", poisoned)
    with pytest.raises(TrainingError, match=r"non-finite loss at step 2 \(epoch 2\).*checkpoint.pt"):
        pretrain(SETTINGS, shards, subjects, tmp_path / "run", log=lambda line: None)
    state = torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=False)
    assert state["step"] == 2 and state["epoch"] == 2  # the last good epoch's checkpoint, never a NaN one


def test_two_process_data_parallel_run_equals_one_process(shards, tmp_path):
    """torchrun with 2 CPU processes (gloo), each with half of every batch, takes the same steps
    (launched as the pretrain rule launches it with pretrain.gpus_per_job: 2)."""
    from brainscale.training.launch import launch_pretraining

    subjects = subjects_of(shards)[:4]
    np.save(tmp_path / "subjects.npy", subjects.astype("S"))
    settings = dict(SETTINGS, batch_size=4, epochs=2, num_workers=0)
    single = pretrain(settings, shards, subjects, tmp_path / "single", log=lambda line: None)
    launch_pretraining(settings, shards, tmp_path / "subjects.npy", tmp_path / "parallel", processes=2,
                       log=lambda line: None, env={**os.environ, "OMP_NUM_THREADS": "1"})
    first = pd.read_csv(tmp_path / "single" / "log.csv")
    second = pd.read_csv(tmp_path / "parallel" / "log.csv")
    np.testing.assert_allclose(second["loss"].to_numpy(), first["loss"].to_numpy(), rtol=1e-4, atol=1e-5)
    a, b = load_encoder(single).state_dict(), load_encoder(tmp_path / "parallel" / "encoder.pt").state_dict()
    for name in a:
        torch.testing.assert_close(b[name], a[name], rtol=1e-4, atol=1e-5)


def test_gradient_accumulation_runs_and_checks_its_slices(shards, tmp_path):
    subjects = subjects_of(shards)[:4]
    export = pretrain(dict(SETTINGS, batch_size=4, accumulate=2, epochs=1), shards, subjects, tmp_path / "acc",
                      log=lambda line: None)
    assert load_encoder(export) is not None
    assert pd.read_csv(tmp_path / "acc" / "log.csv")["loss"].notna().all()
    with pytest.raises(TrainingError, match="accumulate 4 must divide"):
        pretrain(dict(SETTINGS, batch_size=4, accumulate=4), shards, subjects, tmp_path / "bad", log=lambda line: None)


def test_a_checkpoint_of_other_data_is_not_resumed_and_a_lost_log_is_restored(shards, tmp_path):
    subjects = subjects_of(shards)[:4]
    pretrain(dict(SETTINGS, epochs=2), shards, subjects, tmp_path / "run", stop_after_epochs=1, log=lambda line: None)
    (tmp_path / "run" / "log.csv").unlink()  # Snakemake removes the outputs of an incomplete job
    messages = []
    pretrain(dict(SETTINGS, epochs=2), shards, subjects, tmp_path / "run", log=messages.append)
    assert any("resuming" in m for m in messages)
    assert list(pd.read_csv(tmp_path / "run" / "log.csv")["step"]) == [0, 1, 2, 3]
    messages.clear()
    pretrain(dict(SETTINGS, epochs=2), shards, subjects[:2], tmp_path / "run", log=messages.append)
    assert any("starting over" in m for m in messages)
    assert list(pd.read_csv(tmp_path / "run" / "log.csv")["step"]) == [0, 1]
