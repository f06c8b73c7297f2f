"""Brain-JEPA: block masks, brain-gradient positions, the loss, and a pretraining run that exports and resumes."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from brainscale.config import validate_config
from brainscale.errors import ConfigError
from brainscale.models.layers import sincos_embedding
from brainscale.objectives import available_objectives, get_objective, parse_run_name, run_spec
from brainscale.objectives.base import PretrainingData, network_map_of
from brainscale.objectives.jepa.gradients import (brain_gradients, diffusion_embedding, group_connectivity,
                                                  normalized_angle_affinity, subset_gradients)
from brainscale.objectives.jepa.model import JEPAEncoder, mask_indices
from brainscale.objectives.jepa.objective import BlockMasking, BrainJEPA, JEPATraining, jepa_loss, token_indices
from brainscale.objectives.jepa.spec import PRESETS, JEPAConfig
from brainscale.probing.checkpoints import load_checkpoint, random_encoder
from brainscale.probing.embeddings import extract_embeddings
from brainscale.shards.reader import ShardDataset, shard_paths
from brainscale.export import load_encoder
from brainscale.training.loop import pretrain
from tests.test_training import SETTINGS, subjects_of

JEPA = run_spec(SETTINGS, "jepa-tiny")


def _draws(n_patches: int, count: int = 40, seed: int = 0, n_channels: int = 457):
    generator = torch.Generator().manual_seed(seed)
    return [BlockMasking().blocks(n_channels, n_patches, generator=generator) for _ in range(count)]


def test_jepa_is_discovered():
    assert get_objective("jepa") is BrainJEPA
    assert parse_run_name("jepa-base") == (available_objectives()["jepa"], "base")


@pytest.mark.parametrize("n_patches", [3, 4, 10])
def test_blocks_follow_the_reference_ranges(n_patches):
    channels, edge = 457, round(0.3 * n_patches)
    for blocks in _draws(n_patches):
        observation, cross_roi = blocks["observation"], blocks["cross_roi"]
        assert all(mask.shape == (channels, n_patches) and mask.dtype == torch.bool for mask in blocks.values())
        rows, columns = observation.any(dim=1), torch.nonzero(observation.any(dim=0)).flatten()
        assert torch.equal(observation, rows[:, None] & observation.any(dim=0)[None, :])  # one ROI x time block
        assert int(0.84 * channels) <= int(rows.sum()) < channels
        assert columns.tolist() == list(range(int(columns[0]), int(columns[-1]) + 1))  # contiguous
        assert len(columns) == max(1, int(0.84 * n_patches)) or len(columns) == max(1, int(0.84 * n_patches)) + 1
        assert int(columns[-1]) < n_patches - 1 or n_patches == 1  # the reference never observes the last patch
        roi_rows, roi_columns = cross_roi.any(dim=1), torch.nonzero(cross_roi.any(dim=0)).flatten()
        assert int(0.45 * channels) <= int(roi_rows.sum()) < int(0.6 * channels) + 1
        assert set(roi_columns.tolist()) <= set(columns.tolist())  # inside the observed span
        assert 1 <= len(roi_columns) <= max(1, int(0.6 * n_patches))
        for name in ("cross_time", "double_cross"):
            used = set(torch.nonzero(blocks[name].any(dim=0)).flatten().tolist())
            assert used <= set(range(edge)) | set(range(n_patches - edge, n_patches))
        removed = rows & roi_rows
        assert not (blocks["double_cross"].any(dim=1) & ~removed).any()  # Double-Cross: removed ROIs only
        assert not (blocks["cross_time"].any(dim=1) & removed).any()
        context = blocks["context"]
        assert not (context & ~observation).any() and not context[roi_rows].any()
        targets = cross_roi | blocks["cross_time"] | blocks["double_cross"]
        assert context.any() and targets.any() and not (context & targets).any()
        # removing whole end patches leaves the context a block of ROIs x patches
        assert torch.equal(context, context.any(dim=1)[:, None] & context.any(dim=0)[None, :])


def test_reference_context_and_target_shares():
    draws = _draws(10, count=100)
    context = np.mean([float(b["context"].float().mean()) for b in draws])
    cross_time = np.mean([bool(b["cross_time"].any()) for b in draws])
    assert 0.2 < context < 0.4  # about 29% of the 4,570 tokens
    assert 0.5 < cross_time < 1.0  # 0 to 3 end patches on each side
    assert any(bool(b["double_cross"].any()) for b in draws)


def test_masks_skip_missing_channels_and_are_deterministic():
    missing = torch.zeros(457, dtype=torch.bool)
    missing[:100] = True
    masks = [BlockMasking().draw(457, 3, generator=torch.Generator().manual_seed(5), missing=missing) for _ in range(2)]
    (context, targets), (again, _) = masks
    assert torch.equal(context, again)
    assert not context[:100].any() and not targets[:100].any() and context.any() and targets.any()
    with pytest.raises(ValueError, match="457 of 457 channels missing"):
        BlockMasking().draw(457, 3, generator=torch.Generator(), missing=torch.ones(457, dtype=torch.bool))


def test_dataset_items_depend_only_on_seed_pass_and_item(shards):
    subjects = tuple(subjects_of(shards)[:3])
    objective = BrainJEPA(run_spec(dict(SETTINGS, preload=False), "jepa-tiny"), PretrainingData(shards, subjects, 3))
    dataset = objective.dataset()
    x, missing, context, targets = dataset[(1, 2)]
    assert x.shape == (457, 48) and context.shape == targets.shape == (457, 3)
    assert all(torch.equal(a, b) for a, b in zip(dataset[(1, 2)], (x, missing, context, targets)))
    assert not torch.equal(dataset[(2, 2)][2], context)


def _direct_diffusion_map(affinity: np.ndarray, n: int) -> np.ndarray:
    """Coifman & Lafon from the definition: eigh of the symmetric normalised matrix, dense."""
    degree = affinity.sum(axis=1)
    weights = affinity / np.sqrt(np.outer(degree, degree))  # alpha = 0.5
    d_alpha = weights.sum(axis=1)
    values, vectors = np.linalg.eigh(weights / np.sqrt(np.outer(d_alpha, d_alpha)))
    values, vectors = values[::-1][:n + 1], vectors[:, ::-1][:, :n + 1]
    psi = vectors / np.sqrt(d_alpha)[:, None]
    psi = psi[:, 1:] / psi[:, [0]]
    return psi * (values[1:] / values[0] / (1 - values[1:] / values[0]))


def test_gradients_match_a_direct_eigendecomposition():
    rng = np.random.default_rng(0)
    # 40 channels with a low-rank structure
    series = rng.standard_normal((40, 4)) @ rng.standard_normal((4, 300)) + 0.5 * rng.standard_normal((40, 300))
    connectivity = group_connectivity([(series, np.zeros(40, dtype=bool))])
    np.testing.assert_allclose(connectivity, np.corrcoef(series), atol=1e-10)
    affinity = normalized_angle_affinity(connectivity)
    assert np.allclose(affinity, affinity.T) and (affinity >= 0).all() and (affinity <= 1 + 1e-12).all()
    embedding, eigenvalues = diffusion_embedding(affinity, 6)
    direct = _direct_diffusion_map(affinity, 6)
    signs = np.sign((embedding * direct).sum(axis=0))
    np.testing.assert_allclose(embedding, direct * signs, rtol=1e-6, atol=1e-9)
    # right eigenvectors of the Markov matrix P = D_a^-1 W_a (what BrainSpace decomposes)
    degree = affinity.sum(axis=1)
    weights = affinity / np.sqrt(np.outer(degree, degree))
    markov = weights / weights.sum(axis=1, keepdims=True)
    np.testing.assert_allclose(markov @ embedding, embedding * eigenvalues, atol=1e-8)
    assert (np.diff(eigenvalues) <= 1e-12).all()
    scaled = brain_gradients(connectivity, 6)
    np.testing.assert_allclose(scaled.min(axis=0), -1)
    np.testing.assert_allclose(scaled.max(axis=0), 1)
    assert diffusion_embedding(affinity, 100)[0].shape == (40, 39)  # at most C - 1 components


def test_group_connectivity_averages_over_the_runs_where_channels_are_present():
    rng = np.random.default_rng(1)
    first, second = rng.standard_normal((5, 50)), rng.standard_normal((5, 60))
    absent = np.array([False, False, True, False, False])
    second[2] = 0.0
    connectivity = group_connectivity([(first, np.zeros(5, dtype=bool)), (second, absent)])
    expected = (np.corrcoef(first) + np.corrcoef(np.where(absent[:, None], 1.0, second))) / 2
    np.testing.assert_allclose(connectivity[[0, 1, 3, 4]][:, [0, 1, 3, 4]], expected[[0, 1, 3, 4]][:, [0, 1, 3, 4]])
    np.testing.assert_allclose(connectivity[2], np.corrcoef(first)[2])  # only the first run has channel 2
    never = group_connectivity([(second, absent)])
    assert (never[2] == 0).all() and (never[:, 2] == 0).all()
    assert np.isfinite(brain_gradients(never, 3)).all()


def test_subset_gradients_and_positions(shards):
    data = PretrainingData(shards, tuple(subjects_of(shards)[:4]), 0)
    gradients = subset_gradients(data)
    assert gradients.shape == (457, 30) and gradients.dtype == np.float32
    np.testing.assert_allclose(gradients.min(axis=0), -1, atol=1e-6)
    np.testing.assert_allclose(gradients.max(axis=0), 1, atol=1e-6)
    assert not np.allclose(gradients, subset_gradients(PretrainingData(shards, tuple(subjects_of(shards)[4:8]), 0)))
    config = JEPAConfig(**PRESETS["tiny"])
    encoder = JEPAEncoder(config)
    encoder.set_gradients(torch.from_numpy(gradients))
    positions = encoder.positions()
    half = config.width // 2
    assert positions.shape == (457 * 3, config.width)
    time = sincos_embedding(3, half)
    assert torch.equal(positions[5 * 3 + 2, :half], time[2])  # ROI-major: token c * P + p
    spatial = positions[:, half:]
    assert torch.equal(spatial[5 * 3], spatial[5 * 3 + 2])  # the same gradient part at every time
    assert float(spatial.min()) == pytest.approx(-1) and float(spatial.max()) == pytest.approx(1)
    assert "positions.gradients" in encoder.state_dict()  # an export reloads without the data


def test_loss_on_known_inputs():
    generator = torch.Generator().manual_seed(0)
    targets = torch.nn.functional.layer_norm(torch.randn(2, 5, 8, generator=generator), (8,))
    assert float(jepa_loss(targets, targets)) == 0.0
    assert float(jepa_loss(targets + 0.5, targets)) == pytest.approx(0.5 * 0.5 ** 2)
    assert float(jepa_loss(targets - 2.0, targets)) == pytest.approx(2.0 - 0.5)
    valid = torch.tensor([[True, True, False, False, False], [True, False, False, False, False]])
    wrong = torch.where(valid[..., None], targets + 0.5, targets + 100.0)
    assert float(jepa_loss(wrong, targets, valid)) == pytest.approx(0.125)  # padding does not count


def test_predictions_see_only_the_context():
    torch.manual_seed(0)
    config = JEPAConfig(**PRESETS["tiny"])
    model = JEPATraining(config)
    model.set_gradients(torch.rand(457, 30) * 2 - 1)
    generator = torch.Generator().manual_seed(1)
    masks = [BlockMasking().draw(457, 3, generator=generator) for _ in range(2)]
    context, targets = (torch.stack(pair) for pair in zip(*masks))
    x, missing = torch.randn(2, 457, 48), torch.zeros(2, 457, dtype=torch.bool)

    def predict(crops):
        index, valid = mask_indices(context.flatten(1))
        target_index, target_valid = mask_indices(targets.flatten(1))
        encoded = model.context_encoder(crops, missing, index, valid)
        return model.predictor(encoded, index, valid, target_index, target_valid), target_valid

    changed = x + 10 * (~context).repeat_interleave(16, dim=2) * torch.randn(x.shape)
    first, valid = predict(x)
    second, _ = predict(changed)
    assert torch.allclose(first[valid], second[valid], atol=1e-5)
    indices, options = token_indices(context, targets)
    losses = model(x, missing, *indices, **options)
    assert set(losses) == {"total"} and torch.isfinite(losses["total"])
    losses["total"].backward()
    assert all(p.grad is None for p in model.target_encoder.parameters())
    assert model.context_encoder.patch_embed.weight.grad is not None


def test_pretraining_exports_and_resumes_exactly(shards, tmp_path):
    subjects = subjects_of(shards)[:4]
    straight = pretrain(JEPA, shards, subjects, tmp_path / "straight", log=lambda line: None)
    assert pretrain(JEPA, shards, subjects, tmp_path / "resumed", stop_at_step=4, log=lambda line: None) is None
    resumed = pretrain(JEPA, shards, subjects, tmp_path / "resumed", log=lambda line: None)
    first = pd.read_csv(tmp_path / "straight" / "log.csv")
    second = pd.read_csv(tmp_path / "resumed" / "log.csv")
    assert list(first["step"]) == list(range(8)) and np.isfinite(first["loss"]).all()
    np.testing.assert_array_equal(first["loss"].to_numpy(), second["loss"].to_numpy())
    encoder = load_encoder(straight)
    assert isinstance(encoder, JEPAEncoder) and not encoder.has_cls
    assert all(torch.equal(a, b) for a, b in zip(encoder.state_dict().values(),
                                                 load_encoder(resumed).state_dict().values()))
    with torch.no_grad():
        layers = encoder.layer_outputs(torch.randn(2, 457, 48), missing_channels=torch.zeros(2, 457, dtype=torch.bool))
    assert len(layers) == encoder.config.depth and layers[-1].shape == (2, 457 * 3, encoder.config.width)
    assert encoder.positions.gradients.abs().max() == pytest.approx(1)  # the subset's gradients came along
    # the probes read it like any export, and its random init is the weights pretraining starts from
    probed = load_checkpoint(straight, network_map_of(shards))
    dataset = ShardDataset(shard_paths(shards), subjects[:2], crop_length=48, crops="eval", n_eval_crops=2)
    table = extract_embeddings(probed, dataset, batch_size=4)
    assert table.features["cls"].shape == (len(dataset.runs) * 2, 1, 32)
    assert np.isfinite(table.matrix("cls_avg")).all()
    seed = JEPA.training["seed"]
    data = PretrainingData(shards, tuple(subjects), seed)
    start = random_encoder(JEPA, data, seed).state_dict()
    torch.manual_seed(seed)
    built = BrainJEPA(JEPA, data).build().encoder.state_dict()
    assert all(torch.equal(start[key], built[key]) for key in built)


@pytest.mark.parametrize("pretrain, words", [
    ({"architecture": {"patch_length": 20}}, r"patch_length \(20\) does not divide the crop_length \(48\)"),
    ({"architecture": {"token_width": 64}}, r"\['token_width'\] do not apply to jepa-tiny"),
    ({"options": {"jepa": {"observation_rois": [0.4, 0.5]}}}, "leaves an empty context"),
    ({"options": {"jepa": {"cross_roi_rois": [0.0, 0.1]}}}, "without targets"),
    ({"options": {"jepa": {"cross_time_time": [0.9, 1.0], "edge_fraction": 0.5}}}, "every observed time patch"),
    ({"options": {"jepa": {"cross_roi_time": [0.6, 0.2]}}}, r"cross_roi_time must be \[low, high\]"),
    ({"options": {"jepa": {"architecture": {"n_gradients": 0}}}}, r"jepa.architecture.n_gradients': 0 is less than the minimum of 1"),
])
def test_bad_settings_stop_at_config_time(pretrain, words):
    section = {**SETTINGS, **pretrain}
    with pytest.raises(ConfigError, match=words):
        run_spec(section, "jepa-tiny")
    with pytest.raises(ConfigError, match=words):
        validate_config({"pretrain": {"objectives": ["jepa-tiny"], **pretrain}})


@pytest.mark.parametrize("pretrain, words", [
    ({"options": {"jepa": {"mask_ratio": 0.5}}}, r"unknown keys \['mask_ratio'\]|'mask_ratio' was unexpected"),
    ({"options": {"jepa": {"edge_fraction": 0.7}}}, r"jepa.edge_fraction'.*0.7"),
    ({"objectives": ["jepa-huge"]}, "jepa has no size 'huge'"),
])
def test_bad_options_and_sizes_stop_at_config_time(pretrain, words):
    with pytest.raises(ConfigError, match=words):
        validate_config({"pretrain": {"objectives": ["jepa-tiny"], **pretrain}})


def test_mask_ranges_are_checked_without_torch():
    import subprocess
    import sys

    script = ("import sys\nfrom brainscale.objectives import run_spec\nfrom brainscale.config import validate_config\n"
              "section = validate_config({'pretrain': {'objectives': ['jepa-tiny']}})['pretrain']\n"
              "run_spec(section, 'jepa-tiny')\n"
              "section['options'] = {'jepa': {'observation_rois': [0.4, 0.5]}}\n"
              "try:\n    run_spec(section, 'jepa-tiny')\nexcept ValueError as error:\n    print(error)\n"
              "print('torch' in sys.modules)\n")
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    assert "leaves an empty context" in result.stdout and result.stdout.strip().endswith("False")


def test_default_settings_pass_the_check():
    for size in PRESETS:
        run = run_spec(SETTINGS, f"jepa-{size}")
        assert run.training["base_lr"] == 0.032 and run.options["edge_fraction"] == 0.3
    assert JEPAConfig(**PRESETS["base"]).n_tokens == 457 * 10
