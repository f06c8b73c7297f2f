"""Pretraining: the loss goes down, a resumed run equals an uninterrupted one, bad input stops early."""

from __future__ import annotations

import os

import numpy as np
import pandas as pd
import pytest
import torch

from brainscale.config import validate_config
from brainscale.errors import BrainscaleError
from brainscale.objectives import RunSpec, run_spec
from brainscale.objectives.semantoks.distillation import SelfDistillation
from brainscale.objectives.semantoks.spec import MODEL_SIZES, SemantoksConfig
from brainscale.shards.reader import shard_paths, subjects_from_shards
from brainscale.errors import TrainingError
from brainscale.export import load_encoder
from brainscale.training.loop import pretrain

#: A pretrain section (its first run: semantoks-tiny); run_spec(SETTINGS) is the run.
SETTINGS = dict(validate_config({})["pretrain"], batch_size=2, device="cpu", base_lr=0.05,
                budget=dict(unit="steps", total=8, warmup=2, checkpoint_every=2), monitor_every=3,
                options={"semantoks": {"network_decay": 2}})


def with_budget(settings: dict = SETTINGS, **budget) -> dict:
    return dict(settings, budget=dict(settings["budget"], **budget))


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
    straight = pretrain(run_spec(SETTINGS), shards, subjects, tmp_path / "straight", log=lambda line: None)
    assert pretrain(run_spec(SETTINGS), shards, subjects, tmp_path / "resumed", stop_at_step=4,
                    log=lambda line: None) is None
    assert not (tmp_path / "resumed" / "encoder.pt").exists()
    resumed = pretrain(run_spec(SETTINGS), shards, subjects, tmp_path / "resumed", log=lambda line: None)
    first = pd.read_csv(tmp_path / "straight" / "log.csv")
    second = pd.read_csv(tmp_path / "resumed" / "log.csv")
    assert list(first["step"]) == list(range(8)) and list(second["step"]) == list(range(8))
    np.testing.assert_array_equal(first["loss"].to_numpy(), second["loss"].to_numpy())
    np.testing.assert_array_equal(first["cls_rank"].to_numpy(), second["cls_rank"].to_numpy())
    a, b = load_encoder(straight).state_dict(), load_encoder(resumed).state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert (tmp_path / "straight" / "loss.png").stat().st_size > 5000


def test_export_is_small_and_loads_without_training_code(shards, tmp_path):
    subjects = subjects_of(shards)[:2]
    export = pretrain(run_spec(with_budget(total=3)), shards, subjects, tmp_path / "run", log=lambda line: None)
    payload = torch.load(export, weights_only=False)
    assert set(payload) == {"format", "objective", "config", "state_dict", "brainscale", "run", "trained_steps",
                            "pretraining_subjects", "samples_seen", "passes"}
    assert (payload["trained_steps"], payload["samples_seen"], payload["passes"]) == (3, 6, 3.0)
    # where it came from: the package version, the commit of a git checkout, the run specification
    assert payload["brainscale"]["version"] and len(payload["brainscale"]["commit"] or "x" * 40) == 40
    assert run_spec(with_budget(total=3)) == RunSpec.from_dict(payload["run"])
    assert export.stat().st_size < (tmp_path / "run" / "checkpoint.pt").stat().st_size / 2
    encoder = load_encoder(export)
    with torch.no_grad():
        assert encoder(torch.randn(2, 457, 100)).shape == (2, 46, 64)


@pytest.mark.parametrize("overrides, subjects, words", [
    ({"batch_size": 16, "budget": dict(SETTINGS["budget"], unit="epochs")}, 3,
     "larger than the pretraining subset of 3 subjects.*samples or steps"),
    ({"budget": dict(SETTINGS["budget"], warmup=8)}, 3, r"warmup \(8 steps, 8 steps\) is not shorter than the budget"),
    ({"budget": dict(SETTINGS["budget"], unit="samples", total=1, warmup=0)}, 3, "less than one step"),
    ({}, 0, "subset is empty"),
    ({"architecture": {"token_width": 128}}, 3, "token_width"),
    ({"architecture": {"patch_length": 30}}, 3, "does not divide"),
])
def test_bad_settings_stop_before_training(shards, tmp_path, overrides, subjects, words):
    with pytest.raises(BrainscaleError, match=words):
        pretrain(run_spec(dict(SETTINGS, **overrides)), shards, subjects_of(shards)[:subjects], tmp_path / "bad",
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
    with pytest.raises(TrainingError, match=r"non-finite loss at step 2 \(pass 2\).*checkpoint.pt"):
        pretrain(run_spec(SETTINGS), shards, subjects, tmp_path / "run", log=lambda line: None)
    state = torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=False)
    assert state["step"] == 2  # the last good checkpoint, never a NaN one


def test_two_process_data_parallel_run_equals_one_process(shards, tmp_path):
    """torchrun with 2 CPU processes (gloo), each with half of every batch, takes the same steps
    (launched as the pretrain rule launches it with pretrain.gpus_per_job: 2)."""
    from brainscale.training.launch import launch_pretraining

    subjects = subjects_of(shards)[:4]
    np.save(tmp_path / "subjects.npy", subjects.astype("S"))
    settings = dict(with_budget(total=3), batch_size=4, num_workers=0)
    single = pretrain(run_spec(settings), shards, subjects, tmp_path / "single", log=lambda line: None)
    launch_pretraining(run_spec(settings), shards, tmp_path / "subjects.npy", tmp_path / "parallel", processes=2,
                       log=lambda line: None, env={**os.environ, "OMP_NUM_THREADS": "1"})
    # both processes read the run specification written beside the run
    assert RunSpec.read(tmp_path / "parallel" / "run.yaml") == run_spec(settings)
    first = pd.read_csv(tmp_path / "single" / "log.csv")
    second = pd.read_csv(tmp_path / "parallel" / "log.csv")
    np.testing.assert_allclose(second["loss"].to_numpy(), first["loss"].to_numpy(), rtol=1e-4, atol=1e-5)
    a, b = load_encoder(single).state_dict(), load_encoder(tmp_path / "parallel" / "encoder.pt").state_dict()
    for name in a:
        torch.testing.assert_close(b[name], a[name], rtol=1e-4, atol=1e-5)


def test_gradient_accumulation_runs_and_checks_its_slices(shards, tmp_path):
    subjects = subjects_of(shards)[:4]
    export = pretrain(run_spec(dict(with_budget(total=1, warmup=0), batch_size=4, accumulate=2)), shards, subjects, tmp_path / "acc",
                      log=lambda line: None)
    assert load_encoder(export) is not None
    assert pd.read_csv(tmp_path / "acc" / "log.csv")["loss"].notna().all()
    with pytest.raises(TrainingError, match="accumulate 4 must divide"):
        pretrain(run_spec(dict(SETTINGS, batch_size=4, accumulate=4)), shards, subjects, tmp_path / "bad", log=lambda line: None)


def test_a_checkpoint_of_other_data_is_not_resumed_and_a_lost_log_is_restored(shards, tmp_path):
    subjects = subjects_of(shards)[:4]
    settings = with_budget(total=4)
    pretrain(run_spec(settings), shards, subjects, tmp_path / "run", stop_at_step=2, log=lambda line: None)
    (tmp_path / "run" / "log.csv").unlink()  # Snakemake removes the outputs of an incomplete job
    messages = []
    pretrain(run_spec(settings), shards, subjects, tmp_path / "run", log=messages.append)
    assert any("resuming" in m for m in messages)
    assert list(pd.read_csv(tmp_path / "run" / "log.csv")["step"]) == [0, 1, 2, 3]
    messages.clear()
    pretrain(run_spec(with_budget(settings, total=3)), shards, subjects, tmp_path / "run", log=messages.append)
    assert any("starting over" in m for m in messages)
    assert list(pd.read_csv(tmp_path / "run" / "log.csv")["step"]) == [0, 1, 2]


def test_a_batch_larger_than_the_subset_trains_with_distinct_crops(shards, tmp_path):
    subjects = subjects_of(shards)[:2]
    settings = dict(with_budget(unit="samples", total=24, warmup=8), batch_size=8)
    export = pretrain(run_spec(settings), shards, subjects, tmp_path / "run", log=lambda line: None)
    log = pd.read_csv(tmp_path / "run" / "log.csv")
    assert list(log["step"]) == [0, 1, 2] and list(log["samples_seen"]) == [8, 16, 24]
    np.testing.assert_allclose(log["passes"], [4, 8, 12])
    assert torch.load(export, weights_only=False)["passes"] == 12
    # the batch holds each subject four times, each time with its own crops and augmentations
    from brainscale.training.budget import BatchStream, training_budget
    from brainscale.objectives.semantoks.views import AugmentedViews
    from brainscale.shards.reader import ShardDataset

    stream = BatchStream(training_budget(settings["budget"], batch_size=8, subset_size=2), seed=0)
    batch = stream.batch(0)
    assert sorted(item for _, item in batch) == [0, 0, 0, 0, 1, 1, 1, 1] and len(set(batch)) == 8
    dataset = AugmentedViews(ShardDataset(shard_paths(shards), subjects, views=2, seed=0), n_networks=9, n_patches=5,
                             seed=0)
    first_views = [dataset[key][0][0] for key in batch]
    assert all(not torch.equal(first_views[i], first_views[j]) for i in range(8) for j in range(i))


def test_the_budget_is_the_same_at_every_size_and_epochs_reproduce_the_reference():
    from brainscale.training.budget import BatchStream, BudgetError, training_budget

    samples = dict(unit="samples", total=1024, warmup=128, checkpoint_every=512)
    for size in (8, 64, 512):
        budget = training_budget(samples, batch_size=16, subset_size=size)
        assert (budget.total_steps, budget.warmup_steps, budget.steps(256)) == (64, 8, 16)
        assert budget.passes(64) == 1024 / size
        stream = BatchStream(budget, seed=3)
        seen = [item for step in range(64) for item in stream.batch(step)]
        # consecutive passes: every subject once per pass, passes in order
        for index in range(1024 // size):
            assert sorted(item for p, item in seen[index * size:(index + 1) * size] if p == index) == \
                list(range(size))
    epochs = training_budget(dict(samples, unit="epochs", total=40, warmup=3), batch_size=8, subset_size=20)
    assert (epochs.total_steps, epochs.warmup_steps, epochs.steps(5)) == (80, 6, 10)
    stream = BatchStream(epochs, seed=3)
    assert {p for p, _ in stream.batch(1)} == {0} and {p for p, _ in stream.batch(2)} == {1}  # the rest is dropped
    with pytest.raises(BudgetError, match="budget.unit 'hours'"):
        training_budget(dict(samples, unit="hours"), batch_size=8, subset_size=8)


def test_cross_run_views_need_a_subject_with_two_runs(shards, tmp_path):
    from brainscale.shards.reader import ShardDataset

    dataset = ShardDataset(shard_paths(shards), views=2)
    single = [s for s, runs in zip(dataset.subject_ids, dataset.runs_of_subject) if len(runs) == 1][:2]
    settings = dict(SETTINGS, options={"semantoks": {"views": {"mode": "cross_run"}}})
    with pytest.raises(TrainingError, match="none of the 2 subjects of this subset has two runs.*distant"):
        pretrain(run_spec(settings), shards, single, tmp_path / "bad", log=lambda line: None)
    assert not (tmp_path / "bad" / "checkpoint.pt").exists()


def test_the_log_carries_collapse_monitors(shards, tmp_path):
    pretrain(run_spec(with_budget(total=4)), shards, subjects_of(shards)[:4], tmp_path / "run", log=lambda line: None)
    log = pd.read_csv(tmp_path / "run" / "log.csv")
    measured = log.dropna(subset=["cls_rank"])
    assert list(measured["step"]) == [0, 3]  # every monitor_every (3) steps and the last
    assert ((measured["cls_std"] > 0) & (measured["cls_std"] < 2)).all()
    assert ((measured["cls_rank"] >= 1) & (measured["cls_rank"] <= 4)).all()  # 2 views x 2 subjects


def test_collapse_monitors_tell_collapse_from_spread():
    from brainscale.training.diagnostics import collapse_monitors

    generator = torch.Generator().manual_seed(0)
    spread = collapse_monitors(torch.randn(256, 32, generator=generator))
    assert 0.9 < spread["cls_std"] < 1.1 and spread["cls_rank"] > 25
    point = torch.ones(256, 32) + 1e-6 * torch.randn(256, 32, generator=generator)
    collapsed = collapse_monitors(point)
    assert collapsed["cls_std"] < 1e-4
    line = torch.randn(256, 1, generator=generator) * torch.randn(1, 32, generator=generator)  # one direction
    assert collapse_monitors(line)["cls_rank"] < 1.5
    with pytest.raises(ValueError, match="samples >= 2"):
        collapse_monitors(torch.randn(1, 32))
    diverged = torch.randn(8, 32, generator=generator)
    diverged[3, 5] = float("nan")
    assert all(np.isnan(value) for value in collapse_monitors(diverged).values())


def test_losses_come_back_to_the_host_only_at_monitors_and_checkpoints(shards, tmp_path, monkeypatch):
    """A GPU step must not wait for the host: the loop reads losses back in one transfer per window
    (here monitor_every 3 and a checkpoint every 2 steps over 8 steps: after steps 0, 1, 3, 5, 6, 7)."""
    transfers = []
    real_cpu = torch.Tensor.cpu

    def counted(tensor, *args, **kwargs):
        transfers.append(tuple(tensor.shape))
        return real_cpu(tensor, *args, **kwargs)

    monkeypatch.setattr(torch.Tensor, "cpu", counted)
    pretrain(run_spec(SETTINGS), shards, subjects_of(shards)[:4], tmp_path / "run", log=lambda line: None)
    windows = [shape[0] for shape in transfers if len(shape) == 2 and shape[1] == 4]  # (steps, total + 3 terms)
    assert windows == [1, 1, 2, 2, 1, 1]
    log = pd.read_csv(tmp_path / "run" / "log.csv")
    assert list(log["step"]) == list(range(8))
    assert ((log["data_wait"] >= 0) & (log["data_wait"] <= 1)).all() and (log["samples_per_s"] > 0).all()
