"""Shuffled autoregression: causality, orders, the subset's codebook and its cache, losses, training, errors."""

from __future__ import annotations

import json
import math
import shutil

import h5py
import numpy as np
import pandas as pd
import pytest
import torch

from brainscale.config import validate_config
from brainscale.errors import ConfigError, TrainingError
from brainscale.objectives import get_objective, run_spec
from brainscale.objectives.base import PretrainingData
from brainscale.objectives.shuffled.model import ShuffledEncoder, ShuffledTraining, code_loss, patch_loss
from brainscale.objectives.shuffled.objective import ShuffledAutoregression
from brainscale.objectives.shuffled.spec import PRESETS, ShuffledConfig
from brainscale.shards.writer import GROUPS, MANIFEST, sha256_of
from brainscale.export import load_encoder
from brainscale.training.loop import pretrain
from tests.test_training import SETTINGS, subjects_of

VOCABULARY = 8  # the test shards have about 450 windows of 20 TRs per network in 4 subjects


def settings(tmp_path, **options) -> dict:
    """The pretrain section with ``pretrain.options.shuffled``."""
    options = {"vocabulary": VOCABULARY, "codebook_cache": str(tmp_path / "codebooks"), **options}
    return dict(SETTINGS, options={"shuffled": options})


def shuffled_run(tmp_path, **options):
    return run_spec(settings(tmp_path, **options), "shuffled-tiny")


def objective(shards, subjects, tmp_path, **options) -> ShuffledAutoregression:
    return ShuffledAutoregression(shuffled_run(tmp_path, **options),
                                  PretrainingData(shards, tuple(subjects), SETTINGS["seed"]))


def token_patch(config: ShuffledConfig, token: int) -> tuple:
    """The (channels, TR slice) index of natural token ``token`` (network-major)."""
    network, patch = divmod(token, config.n_patches)
    channels = torch.as_tensor(config.channels_of_network()[network])
    return channels, slice(patch * config.patch_length, (patch + 1) * config.patch_length)


def test_no_output_depends_on_a_later_input():
    torch.manual_seed(0)
    config = ShuffledConfig(**PRESETS["tiny"])
    encoder = ShuffledEncoder(config).eval()
    x = torch.randn(2, config.n_channels, config.crop_length)
    order = torch.stack([torch.randperm(config.n_tokens) for _ in range(2)])
    with torch.no_grad():
        before = encoder.step_outputs(x, None, order)
        for k in (0, 7, config.n_tokens - 2):
            changed = x.clone()
            for b in range(2):
                channels, times = token_patch(config, int(order[b, k]))
                changed[b, channels, times] += 3.0
            after = encoder.step_outputs(changed, None, order)
            # token order[k] enters at step k + 1: steps 0..k do not see it, step k + 1 does
            torch.testing.assert_close(after[:, :k + 1], before[:, :k + 1], rtol=0, atol=1e-6)
            assert (after[:, k + 1] - before[:, k + 1]).abs().amax() > 1e-3
        # the last token of the order is never an input: it only is predicted
        changed = x.clone()
        for b in range(2):
            channels, times = token_patch(config, int(order[b, -1]))
            changed[b, channels, times] += 3.0
        torch.testing.assert_close(encoder.step_outputs(changed, None, order), before, rtol=0, atol=1e-6)
        # probing: the natural order under the same causal attention
        layers = encoder.layer_outputs(x)
        assert len(layers) == config.depth and layers[-1].shape == (2, config.n_tokens, config.width)
        changed = x.clone()
        channels, times = token_patch(config, 20)
        changed[:, channels, times] += 3.0
        for old, new in zip(layers, encoder.layer_outputs(changed)):
            torch.testing.assert_close(new[:, :20], old[:, :20], rtol=0, atol=1e-6)
            assert (new[:, 20] - old[:, 20]).abs().amax() > 1e-3
        torch.testing.assert_close(encoder(x), layers[-1])


def test_missing_networks_get_the_mask_embedding_and_no_target():
    torch.manual_seed(0)
    config = ShuffledConfig(**PRESETS["tiny"])
    model = ShuffledTraining(config, vocabulary=4).eval()
    x = torch.randn(2, config.n_channels, config.crop_length)
    missing = torch.zeros(2, config.n_channels, dtype=torch.bool)
    missing[0, config.channels_of_network()[8]] = True  # the cerebellum of sample 0
    altered = x.clone()
    altered[0, config.channels_of_network()[8]] = 100.0
    with torch.no_grad():
        assert torch.equal(model.encoder(x, missing), model.encoder(altered, missing))
        contents = model.encoder.contents(x, missing).view(2, 9, 5, -1) - model.encoder.positions().view(9, 5, -1)
        torch.testing.assert_close(contents[0, 8], model.encoder.mask_embedding.expand(5, -1))
        order = torch.stack([torch.randperm(45) for _ in range(2)])
        codes = torch.randint(0, 4, (2, 9, 5))
        other = codes.clone()
        other[0, 8] = (other[0, 8] + 1) % 4  # a missing network's codes are not targets
        assert torch.equal(model(x, missing, order, codes)["total"], model(x, missing, order, other)["total"])


def test_losses_on_known_inputs():
    logits = torch.zeros(2, 3, 4, 5)
    codes = torch.randint(0, 5, (2, 3, 4))
    assert math.isclose(float(code_loss(logits, codes)), math.log(5), rel_tol=1e-6)
    confident = torch.nn.functional.one_hot(codes, 5).float() * 50
    codes[0] = -1  # left out
    confident[0] = -confident[0]  # would be very wrong
    assert float(code_loss(confident, codes)) < 1e-6
    targets = [torch.ones(2, 4, 6), torch.full((2, 4, 3), 5.0)]
    predictions = [torch.zeros(2, 4, 6), torch.zeros(2, 4, 3)]
    present = torch.tensor([[True, True], [True, False]])
    # tokens weigh equally: 8 tokens of error 1 and 4 of error 25
    assert math.isclose(float(patch_loss(predictions, targets, present)), (8 + 4 * 25) / 12, rel_tol=1e-6)
    # the model: zero heads give the uniform log-likelihood, and continuous MSE of a zero prediction
    torch.manual_seed(0)
    config = ShuffledConfig(**PRESETS["tiny"])
    x = torch.randn(2, config.n_channels, config.crop_length)
    missing = torch.zeros(2, config.n_channels, dtype=torch.bool)
    order = torch.stack([torch.randperm(45) for _ in range(2)])
    for target in ("codes", "continuous"):
        model = ShuffledTraining(config, target=target, vocabulary=16)
        for head in model.heads:
            torch.nn.init.zeros_(head.weight)
            torch.nn.init.zeros_(head.bias)
        loss = float(model(x, missing, order, torch.randint(0, 16, (2, 9, 5)))["total"])
        per_token = torch.stack([p.pow(2).mean(dim=-1) for p in model.encoder.patches(x)], dim=1)  # (B, N, P)
        expected = math.log(16) if target == "codes" else float(per_token.mean())
        assert math.isclose(loss, expected, rel_tol=1e-5)


def test_orders_are_permutations_drawn_per_seed_pass_and_item(shards, tmp_path):
    subjects = subjects_of(shards)[:4]
    dataset = objective(shards, subjects, tmp_path, target="continuous").dataset()
    orders = {key: dataset[key][2] for key in ((0, 0), (0, 1), (1, 0))}
    for order in orders.values():
        assert sorted(order.tolist()) == list(range(45))
    assert len({tuple(o.tolist()) for o in orders.values()}) == 3
    assert torch.equal(dataset[(0, 1)][2], orders[(0, 1)])
    other = ShuffledAutoregression(shuffled_run(tmp_path, target="continuous"),
                                   PretrainingData(shards, tuple(subjects), SETTINGS["seed"] + 1)).dataset()
    assert not torch.equal(other[(0, 1)][2], orders[(0, 1)])
    x, missing, order = next(iter(torch.utils.data.DataLoader(dataset, batch_sampler=[[(0, 0), (0, 1)]])))
    assert order.shape == (2, 45) and not torch.equal(order[0], order[1])


def _copy_with_changed_subject(shards, folder, subject: str):
    """A copy of the shards where ``subject``'s runs are scaled (manifest checksums updated)."""
    shutil.copytree(shards, folder)
    manifest = json.loads((folder / MANIFEST).read_text())
    for entry in manifest["shards"]:
        with h5py.File(folder / entry["file"], "r+") as shard:
            rows = [row for row, value in enumerate(shard["long_subject_id"][:]) if value.decode() == subject]
            for row in rows:
                for name, _ in GROUPS:
                    shard[f"timeseries/{name}"][row] = shard[f"timeseries/{name}"][row] * 3.0 + 1.0
        entry["sha256"] = sha256_of(folder / entry["file"])
    (folder / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")


def test_codebook_is_fitted_on_the_pretraining_subjects_only_and_cached(shards, tmp_path):
    everyone = subjects_of(shards)
    subset, outsider = everyone[:3], everyone[-1]
    first = objective(shards, subset, tmp_path)
    codebook = first.codebook()
    assert codebook.source_ == "fitted" and first.codebook_path().is_file()
    assert len(codebook.centroids_) == 9 and all(c.shape[0] == VOCABULARY for c in codebook.centroids_)
    assert codebook.centroids_[6].shape[1] == len(first.config().channels_of_network()[6]) * 20
    # a patch's code is its nearest centroid; a dataset item carries the codes of its crop
    x, missing, order, codes = first.dataset()[(0, 1)]
    assert codes.shape == (9, 5) and int(codes.min()) >= 0 and int(codes.max()) < VOCABULARY
    channels = first.config().channels_of_network()[3]
    patch = x[channels, 40:60].numpy().reshape(-1)
    nearest = ((codebook.centroids_[3] - patch) ** 2).sum(axis=1).argmin()
    assert int(codes[3, 2]) == int(nearest)
    # a second call reads the cache
    again = objective(shards, subset, tmp_path).codebook()
    assert again.source_ == first.codebook_path()
    assert all(np.array_equal(a, b) for a, b in zip(codebook.centroids_, again.centroids_))
    # another subset, vocabulary or seed is another file
    assert objective(shards, everyone[:4], tmp_path).codebook_path() != first.codebook_path()
    assert objective(shards, subset, tmp_path, vocabulary=9).codebook_path() != first.codebook_path()
    # a subject outside the subset changes nothing (other shard contents: another key, the same fit)
    changed = tmp_path / "changed" / "shards"
    _copy_with_changed_subject(shards, changed, outsider)
    refit = objective(changed, subset, tmp_path / "elsewhere")
    assert refit.codebook_path().name != first.codebook_path().name
    fitted = refit.codebook()
    assert fitted.source_ == "fitted"
    assert all(np.array_equal(a, b) for a, b in zip(codebook.centroids_, fitted.centroids_))
    # while a subject inside does change it
    _copy_with_changed_subject(shards, tmp_path / "inside" / "shards", subset[0])
    inside = objective(tmp_path / "inside" / "shards", subset, tmp_path / "inside").codebook()
    assert not np.array_equal(inside.centroids_[0], codebook.centroids_[0])
    # the default cache is <shard folder>/../cache/codebooks
    default = ShuffledAutoregression(run_spec(SETTINGS, "shuffled-tiny"), PretrainingData(shards, tuple(subset), 0))
    assert default.codebook_path().parent == shards.resolve().parent / "cache" / "codebooks"


def test_the_random_init_baseline_fits_no_codebook(shards, tmp_path):
    built = objective(shards, subjects_of(shards)[:3], tmp_path)
    encoder = built.random_encoder(0)
    assert isinstance(encoder, ShuffledEncoder) and not (tmp_path / "codebooks").exists()


def test_a_codebook_larger_than_the_training_patches_stops_before_training(shards, tmp_path):
    with pytest.raises(TrainingError, match=r"pretrain\.options\.shuffled\.vocabulary.*larger than the 178 "
                                            r"training patches.*at most 178"):
        pretrain(shuffled_run(tmp_path, vocabulary=500), shards, subjects_of(shards)[:2], tmp_path / "run",
                 log=lambda line: None)
    assert not (tmp_path / "run" / "checkpoint.pt").exists()


def test_pretraining_exports_an_encoder_and_resumes_exactly(shards, tmp_path):
    subjects = subjects_of(shards)[:4]
    run = shuffled_run(tmp_path)
    straight = pretrain(run, shards, subjects, tmp_path / "straight", log=lambda line: None)
    assert pretrain(run, shards, subjects, tmp_path / "resumed", stop_at_step=4, log=lambda line: None) is None
    resumed = pretrain(run, shards, subjects, tmp_path / "resumed", log=lambda line: None)
    first = pd.read_csv(tmp_path / "straight" / "log.csv")
    second = pd.read_csv(tmp_path / "resumed" / "log.csv")
    assert list(first["step"]) == list(range(8)) and np.isfinite(first["loss"]).all()
    assert first["loss"].iloc[0] < math.log(VOCABULARY) + 0.5
    np.testing.assert_array_equal(first["loss"].to_numpy(), second["loss"].to_numpy())
    encoder = load_encoder(straight)
    assert isinstance(encoder, ShuffledEncoder) and encoder.config.network_map == objective(
        shards, subjects, tmp_path).config().network_map
    a, b = encoder.state_dict(), load_encoder(resumed).state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    x = torch.zeros(2, encoder.config.n_channels, encoder.config.crop_length)
    assert [t.shape for t in encoder.layer_outputs(x)] == [(2, 45, 64)] * 2


def test_continuous_targets_train_without_a_codebook(shards, tmp_path):
    run = run_spec(dict(settings(tmp_path, target="continuous"), budget=dict(SETTINGS["budget"], total=2, warmup=1)),
                   "shuffled-tiny")
    assert pretrain(run, shards, subjects_of(shards)[:2], tmp_path / "run", log=lambda line: None).is_file()
    assert np.isfinite(pd.read_csv(tmp_path / "run" / "log.csv")["loss"]).all()
    assert not (tmp_path / "codebooks").exists()


@pytest.mark.parametrize("options, architecture, words", [
    # the options' schema words where it refuses a value first, else the check's
    ({"vocabulary": 1}, {}, r"pretrain\.options\.shuffled\.vocabulary: 1 codes.*at least 2|"
                            r"pretrain\.options\.shuffled\.vocabulary': 1 is less than the minimum of 2"),
    ({"vocabulary": 2.5}, {}, r"pretrain\.options\.shuffled\.vocabulary"),
    ({"target": "pixels"}, {}, r"pretrain\.options\.shuffled\.target: 'pixels'.*codes.*continuous|"
                               r"shuffled\.target': 'pixels' is not one of \['codes', 'continuous'\]"),
    ({"codebook_patches": 4}, {}, r"pretrain\.options\.shuffled\.codebook_patches: 4.*at least 8"),
    ({"codebook_cache": 3}, {}, r"pretrain\.options\.shuffled\.codebook_cache"),
    ({}, {"patch_length": 30}, r"pretrain\.architecture.*patch_length \(30\) does not divide crop_length \(100\)"),
    ({}, {"crop_length": 10}, r"crop_length \(10\) is shorter than one patch"),
    ({}, {"token_width": 128}, "token_width"),
])
def test_bad_settings_stop_at_config_time(shards, tmp_path, options, architecture, words):
    bad = settings(tmp_path, **options)
    bad["architecture"] = dict(SETTINGS["architecture"], **architecture)
    with pytest.raises(ConfigError, match=words):
        run_spec(bad, "shuffled-tiny")
    raw = {"objectives": ["shuffled-tiny"], "options": bad["options"],
           "architecture": dict(architecture)}
    with pytest.raises(ConfigError, match=r"pretrain\.options\.shuffled|pretrain\.architecture|token_width"):
        validate_config({"pretrain": raw})
    assert not (tmp_path / "codebooks").exists()


@pytest.mark.parametrize("options, words", [
    ({"nosuch": 1}, r"unknown keys|'nosuch' was unexpected"),
    ({"vocabulary": 1}, r"shuffled.vocabulary'.*less than the minimum of 2"),
    ({"target": "pixels"}, r"shuffled.target'.*'pixels' is not one of"),
])
def test_options_are_checked_by_their_schema(tmp_path, options, words):
    with pytest.raises(ConfigError, match=words):
        validate_config({"pretrain": {"objectives": ["shuffled-tiny"], "options": {"shuffled": options}}})


def test_the_defaults_pass_and_set_the_training_keys():
    for size in PRESETS:
        run = run_spec(SETTINGS, f"shuffled-{size}")
        assert dict(run.options) == {"target": "codes", "vocabulary": 64, "codebook_patches": 8192,
                                     "codebook_cache": None}
        assert run.training["base_lr"] == 0.032 and list(run.training["weight_decay"]) == [0.05, 0.05]
    assert get_objective("shuffled") is ShuffledAutoregression
