"""The token-per-TR objectives of learning-from-brains: csm, seqbert, netbert, autoencoder.

Causality of the GPT-style decoder, masks and is-next pairs drawn in the dataset, losses on
known inputs, a short run of each objective whose export loads, exact resume, config errors.
"""

from __future__ import annotations

import dataclasses
import json
import math

import numpy as np
import pandas as pd
import pytest
import torch

from brainscale.config import validate_config
from brainscale.errors import ConfigError, TrainingError
from brainscale.objectives import get_objective, run_spec
from brainscale.objectives.autoencoder.objective import AutoencoderTraining
from brainscale.objectives.autoencoder.spec import LSTM_PRESETS
from brainscale.objectives.base import PretrainingData, token_features
from brainscale.objectives.csm.objective import CausalSequenceTraining
from brainscale.objectives.netbert.objective import channel_mask, network_mask
from brainscale.objectives.seqbert.objective import BERTTraining, item_generator, step_mask
from brainscale.objectives.sequence.config import TRANSFORMER_PRESETS
from brainscale.objectives.sequence.model import LSTMConfig, TransformerConfig, masked_l1
from brainscale.shards.writer import MANIFEST
from brainscale.export import load_encoder
from brainscale.objectives.base import network_map_of
from brainscale.training.loop import pretrain
from tests.test_training import SETTINGS, subjects_of

NAMES = ("csm", "seqbert", "netbert", "autoencoder")
C, T = 457, 48


def section_of(name: str, **options) -> dict:
    """The test ``pretrain`` section with ``options`` for objective ``name`` (and no other's)."""
    return dict(SETTINGS, options={name: options} if options else {})


def run_of(name: str, **options):
    """The run ``{name}-tiny`` of the test section (a RunSpec, checked)."""
    return run_spec(section_of(name, **options), f"{name}-tiny")


def objective_of(name: str, shards, **options):
    return get_objective(name)(run_of(name, **options), PretrainingData(shards, tuple(subjects_of(shards)), 21))


def crops(batch: int = 2, seed: int = 0) -> torch.Tensor:
    return torch.randn(batch, C, T, generator=torch.Generator().manual_seed(seed))


# --- causality ------------------------------------------------------------------------------------
def test_csm_outputs_depend_on_no_later_input():
    torch.manual_seed(0)
    model = CausalSequenceTraining(TransformerConfig(**TRANSFORMER_PRESETS["tiny"])).eval()
    x = crops(1)
    missing = torch.zeros(1, C, dtype=torch.bool)
    perturbed = x.clone()
    perturbed[:, :, 20] += 5.0
    with torch.no_grad():
        before, after = model.encoder.layer_outputs(x, missing), model.encoder.layer_outputs(perturbed, missing)
        predicted, predicted_after = model.predictions(x, missing), model.predictions(perturbed, missing)
    for layer, layer_after in zip(before, after):
        torch.testing.assert_close(layer[:, :20], layer_after[:, :20], rtol=0, atol=1e-6)
        assert (layer[:, 20:] - layer_after[:, 20:]).abs().amax(dim=-1).min() > 1e-4  # t >= 20 all see it
    torch.testing.assert_close(predicted[:, :, :20], predicted_after[:, :, :20], rtol=0, atol=1e-6)
    # autograd: the prediction of TR 11 (column 10) has no gradient from any TR after 10
    x = x.requires_grad_()
    model.predictions(x, missing)[:, :, 10].sum().backward()
    influence = x.grad.abs().sum(dim=(0, 1))
    assert torch.all(influence[11:] == 0) and torch.all(influence[:11] > 0)
    # the BERT-style encoder is not causal
    bert = BERTTraining(TransformerConfig(**TRANSFORMER_PRESETS["tiny"]), masking="steps", is_next_weight=1.0).eval()
    with torch.no_grad():
        assert not torch.allclose(bert.encoder(x.detach())[:, 1:20], bert.encoder(perturbed)[:, 1:20])


# --- masks and is-next pairs ------------------------------------------------------------------------
def test_masks_have_fixed_sizes_spare_missing_channels_and_repeat_for_a_key():
    missing = torch.zeros(C, dtype=torch.bool)
    missing[:50] = True
    steps = step_mask(item_generator(1, 2, 3), missing, length=T, count=10)
    assert steps.shape == (T,) and steps.sum() == 10 == round(0.2 * T)
    assert torch.equal(steps, step_mask(item_generator(1, 2, 3), missing, length=T, count=10))
    assert not torch.equal(steps, step_mask(item_generator(1, 2, 4), missing, length=T, count=10))
    channels = channel_mask(item_generator(1, 2, 3), missing, count=46)
    assert channels.shape == (C,) and channels.sum() == 46 and not (channels & missing).any()
    assert channel_mask(item_generator(0, 0, 0), torch.arange(C) > 0, count=46).sum() == 0  # one present: kept
    network_map = torch.as_tensor(network_map_of_reference())
    networks = network_mask(item_generator(1, 2, 3), missing, network_map=network_map, count=1)
    assert not (networks & missing).any() and len(torch.unique(network_map[networks])) == 1
    chosen = int(network_map[networks][0])
    assert torch.equal(networks, (network_map == chosen) & ~missing)  # the network's present channels, all TRs


def network_map_of_reference() -> list[int]:
    from brainscale.models.config import reference_network_map

    return reference_network_map()


@pytest.mark.parametrize("name, options, shape, count", [
    ("seqbert", {}, (T,), 10), ("netbert", {}, (C,), 46), ("netbert", {"unit": "networks"}, (C,), None)])
def test_dataset_items_collate_repeat_and_pair_halves(shards, name, options, shape, count):
    objective = objective_of(name, shards, **options)
    dataset = objective.dataset()
    plain = objective.data.crops(T)
    labels = []
    for epoch in range(10):
        for item in range(len(dataset)):
            x, missing, mask, is_next = dataset[(epoch, item)]
            assert x.shape == (C, T) and missing.shape == (C,) and mask.shape == shape and is_next.shape == ()
            if count is not None:
                assert mask.sum() == count
            if name == "netbert":
                assert not (mask & missing).any()
            again = dataset[(epoch, item)]
            assert all(torch.equal(a, b) for a, b in zip((x, missing, mask, is_next), again))
            crop = plain[(epoch, item)][0]
            assert torch.equal(x[:, :T // 2], crop[:, :T // 2])
            # a true pair is the contiguous crop; another pair's second half comes from elsewhere
            assert torch.equal(x[:, T // 2:], crop[:, T // 2:]) == bool(is_next)
            labels.append(int(is_next))
    assert 0.3 < np.mean(labels) < 0.7, labels


# --- losses on known inputs ---------------------------------------------------------------------------
def test_losses_on_known_inputs():
    x = crops(2)
    missing = torch.zeros(2, C, dtype=torch.bool)
    missing[:, :7] = True
    weight = torch.zeros(2, C, T, dtype=torch.bool)
    weight[:, 10:12, 3] = True
    assert float(masked_l1(x + 0.25, x, weight)) == pytest.approx(0.25)
    assert float(masked_l1(x, x, torch.zeros(1, 1, 1, dtype=torch.bool))) == 0.0

    def garbled(values: torch.Tensor, offset: float) -> torch.Tensor:
        values = values + offset
        values[:, :7] = 1e3  # missing channels never count
        return values

    torch.manual_seed(0)
    csm = CausalSequenceTraining(TransformerConfig(**TRANSFORMER_PRESETS["tiny"]))
    csm.predictions = lambda x, m: garbled(torch.cat([x[:, :, 1:], x[:, :, :1]], dim=2), 0.5)  # column t = TR t+1
    assert float(csm(x, missing)["total"]) == pytest.approx(0.5)

    autoencoder = AutoencoderTraining(LSTMConfig(**LSTM_PRESETS["tiny"]))
    autoencoder.reconstruction = lambda x, m: garbled(x, -0.75)
    assert float(autoencoder(x, missing)["total"]) == pytest.approx(0.75)

    is_next = torch.tensor([1, 0])
    for masking, mask in (("steps", torch.arange(T).expand(2, T) % 5 == 0),
                          ("channels", torch.arange(C).expand(2, C) % 10 == 0)):
        bert = BERTTraining(TransformerConfig(**TRANSFORMER_PRESETS["tiny"]), masking=masking, is_next_weight=0.5)
        target = mask[:, None, :] if masking == "steps" else mask[:, :, None]
        bert.outputs = lambda x, m, k, target=target: (garbled(torch.where(target, x + 2.0, x + 50.0), 0.0),
                                                       torch.tensor([[0.0, 30.0], [0.0, 0.0]]))
        losses = bert(x, missing, mask, is_next)
        assert float(losses["reconstruction"]) == pytest.approx(2.0)
        assert float(losses["is_next"]) == pytest.approx(math.log(2) / 2, abs=1e-6)  # (~0 + log 2) / 2
        assert float(losses["total"]) == pytest.approx(2.0 + 0.5 * math.log(2) / 2, abs=1e-6)


# --- training, exports, resume --------------------------------------------------------------------------
@pytest.mark.parametrize("name", NAMES)
def test_short_run_exports_an_encoder_with_every_layer(shards, tmp_path, name):
    export = pretrain(run_of(name), shards, subjects_of(shards)[:4], tmp_path / name, log=lambda line: None)
    log = pd.read_csv(tmp_path / name / "log.csv")
    terms = get_objective(name).loss_terms
    assert len(log) == 8 and np.isfinite(log[["loss", *terms]].to_numpy()).all()
    encoder = load_encoder(export)
    config = encoder.config
    assert config.network_map == network_map_of(shards) and config.tr == 2.0 and config.crop_length == T
    missing = torch.zeros(3, C, dtype=torch.bool)
    missing[0, :20] = True
    with torch.no_grad():
        layers = encoder.layer_outputs(crops(3), missing_channels=missing)
        last = encoder(crops(3), missing_channels=missing)
    assert len(layers) == config.depth
    assert all(layer.shape == (3, T + encoder.has_cls, config.width) for layer in layers)
    torch.testing.assert_close(layers[-1], last)
    cls, mean = token_features(encoder, layers[-1])
    assert cls.shape == mean.shape == (3, config.width)
    assert encoder.has_cls == (name != "csm")


def test_resumed_run_equals_uninterrupted_run(shards, tmp_path):
    subjects = subjects_of(shards)[:4]
    run = run_of("seqbert")
    pretrain(run, shards, subjects, tmp_path / "straight", log=lambda line: None)
    assert pretrain(run, shards, subjects, tmp_path / "resumed", stop_at_step=4, log=lambda line: None) is None
    pretrain(run, shards, subjects, tmp_path / "resumed", log=lambda line: None)
    first, second = (pd.read_csv(tmp_path / run / "log.csv") for run in ("straight", "resumed"))
    assert list(second["step"]) == list(range(8))
    for column in ("loss", "reconstruction", "is_next"):
        np.testing.assert_array_equal(first[column].to_numpy(), second[column].to_numpy())


# --- configuration ---------------------------------------------------------------------------------------
def test_tr_comes_from_the_shards_record_else_the_option(shards, tmp_path):
    assert objective_of("csm", shards).tr == 2.0  # the test shards record no preprocess section
    assert objective_of("csm", shards, tr=1.5).tr == 1.5
    folder = tmp_path / "shards"
    folder.mkdir()
    (folder / MANIFEST).write_text(json.dumps({"shards": [], "config": {"preprocess": {"target_tr": 0.8}}}))
    data = PretrainingData(folder, (), 0)
    assert get_objective("csm")(run_of("csm"), data).tr == 0.8
    with pytest.raises(TrainingError, match=r"pretrain.options.csm.tr is 2.0 s.*target_tr = 0.8"):
        get_objective("csm")(run_of("csm", tr=2.0), data).tr


@pytest.mark.parametrize("name, changes, words", [
    ("seqbert", {"options": {"mask_ratio": 0.01}}, r"seqbert.mask_ratio 0.01 masks round.* = 0 of the 48 TRs.*nothing"),
    ("seqbert", {"options": {"mask_ratio": 0.99}}, r"seqbert.mask_ratio 0.99 masks all 48 TRs"),
    ("netbert", {"options": {"mask_ratio": 0.02, "unit": "networks"}}, r"0 of the 9 networks.*unit: channels"),
    ("netbert", {"options": {"mask_ratio": 1.5}}, r"pretrain.options.netbert.mask_ratio': 1.5 is greater than or equal to the maximum of 1"),
    ("netbert", {"options": {"unit": "parcels"}}, r"pretrain.options.netbert.unit': 'parcels' is not one of \['channels', 'networks'\]"),
    ("seqbert", {"architecture": {"crop_length": 3}}, r"crop_length 3 is too short for seqbert.*at least 4"),
    ("netbert", {"architecture": {"crop_length": 3}}, r"crop_length 3 is too short for netbert"),
    ("csm", {"architecture": {"crop_length": 1}}, r"pretrain.architecture for csm-tiny: crop_length \(1\)"),
    ("autoencoder", {"architecture": {"crop_length": 200}}, r"exceeds the 300 s.*at most 151 TRs"),
    ("csm", {"architecture": {"patch_length": 20}}, r"pretrain.architecture.patch_length does not apply to csm"),
    ("autoencoder", {"architecture": {"head_dim": 32}}, r"architecture.head_dim does not apply to autoencoder"),
    ("csm", {"architecture": {"width": 100}}, r"width \(100\) must be a multiple of head_dim"),
    ("csm", {"options": {"tr": -1}}, r"pretrain.options.csm.tr': -1 is less than or equal to the minimum of 0"),
    ("seqbert", {"options": {"is_next_weight": -1}}, r"pretrain.options.seqbert.is_next_weight': -1 is less than the minimum of 0"),
])
def test_bad_settings_are_refused_at_config_time(name, changes, words):
    architecture, options = changes.get("architecture", {}), changes.get("options", {})
    section = dict(SETTINGS, architecture=dict(SETTINGS["architecture"], **architecture), options={name: options})
    with pytest.raises(ConfigError, match=words):
        run_spec(section, f"{name}-tiny")
    # the workflow's config check refuses them too (the option schema, else the same check)
    with pytest.raises(ConfigError, match=rf"pretrain.(options.{name}|objectives.0)"):
        validate_config({"pretrain": {"objectives": [f"{name}-tiny"], "architecture": architecture,
                                      "options": {name: options}}})


def test_unknown_options_are_refused_at_config_time():
    with pytest.raises(ConfigError, match=r"pretrain.options.autoencoder.*'mask_ratio' was unexpected"):
        validate_config({"pretrain": {"objectives": ["autoencoder-tiny"],
                                      "options": {"autoencoder": {"mask_ratio": 0.2}}}})


def test_a_bad_setting_stops_pretraining_before_it_starts(shards, tmp_path):
    with pytest.raises(ConfigError, match="mask_ratio"):
        run_of("seqbert", mask_ratio=0.0)
    # a run that escaped the config check (written by hand) is refused before any step
    run = run_of("seqbert")
    bad = dataclasses.replace(run, options={**run.options, "mask_ratio": 0.0})
    with pytest.raises(ConfigError, match="mask_ratio"):
        pretrain(bad, shards, subjects_of(shards)[:4], tmp_path / "bad", log=lambda line: None)
    assert not (tmp_path / "bad" / "checkpoint.pt").exists()
