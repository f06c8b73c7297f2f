"""The BrainLM-style MAE: channel coordinates, token masks, the loss, training, export and resume."""

from __future__ import annotations

import shutil

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
import torch

from brainscale.config import validate_config
from brainscale.errors import ConfigError, TrainingError
from brainscale.objectives import available_objectives, get_objective, parse_run_name, run_spec
from brainscale.objectives.base import PretrainingData
from brainscale.objectives.mae.model import MAETraining, masked_patch_loss, standardise_coordinates
from brainscale.objectives.mae.objective import BrainLMMAE, draw_token_masks
from brainscale.objectives.mae.spec import MAE_SIZES, MAEConfig, mask_counts
from brainscale.preprocessing.atlases import AtlasSet, _surface_cortex_coordinates, surface_centroids, volume_centroids
from brainscale.export import load_encoder
from brainscale.training.loop import pretrain
from tests.test_training import SETTINGS, subjects_of

MAE = run_spec(SETTINGS, "mae-tiny")


def mae_settings(**options) -> dict:
    """The pretrain section with ``pretrain.options.mae``."""
    return dict(SETTINGS, options={"mae": options})


def mae_run(**options):
    return run_spec(mae_settings(**options), "mae-tiny")


# --- coordinates -----------------------------------------------------------------------------

def test_volume_centroids_are_the_parcels_mean_voxel_in_world_coordinates():
    data = np.zeros((6, 5, 4), np.int16)
    data[0:2, 0, 0] = 3  # voxels (0,0,0), (1,0,0): centre (0.5, 0, 0)
    data[4, 1:4, 2] = 8  # centre (4, 2, 2)
    affine = np.array([[2.0, 0, 0, -10], [0, 3.0, 0, 5], [0, 0, 4.0, 1], [0, 0, 0, 1]])
    centroids = volume_centroids(nib.Nifti1Image(data, affine), np.array([8, 3, 5]))  # 5: no voxel
    np.testing.assert_allclose(centroids[:2], [[-2.0, 11.0, 9.0], [-9.0, 5.0, 1.0]])
    assert np.isnan(centroids[2]).all()


def _surface_atlas_set(names: list[str], left: np.ndarray, right: np.ndarray) -> AtlasSet:
    return AtlasSet(images={}, labels={"cortical": np.arange(1, len(names) + 1)}, names={"cortical": names},
                    cortical_network_7=np.zeros(len(names), int), cortical_network_17=None, space=None,
                    surface_channels=(left, right))


def test_surface_coordinates_come_from_a_volumetric_twin_else_the_pial_mesh(tmp_path):
    names = ["7Networks_LH_Vis_1", "7Networks_RH_Vis_1"]
    left, right = np.array([0, 0, -1, 0]), np.array([1, 1, 1, -1])  # per-vertex channel, -1: medial wall
    meshes = (np.array([[-10.0, 0, 0], [-20, 2, 0], [99, 99, 99], [-30, 4, 6]]),
              np.array([[10.0, 0, 0], [20, 0, 3], [30, 0, 6], [99, 99, 99]]))
    np.testing.assert_allclose(surface_centroids((left, right), meshes, 2), [[-20, 2, 2], [20, 0, 3]])
    # A FreeSurfer subject folder: label/?h.*.annot beside surf/?h.pial.
    (tmp_path / "fsavg" / "label").mkdir(parents=True)
    (tmp_path / "fsavg" / "surf").mkdir()
    surface = {}
    for side, hemi, mesh in (("left", "lh", meshes[0]), ("right", "rh", meshes[1])):
        nib.freesurfer.write_geometry(str(tmp_path / "fsavg" / "surf" / f"{hemi}.pial"), mesh,
                                      np.array([[0, 1, 2]]))
        surface[side] = str(tmp_path / "fsavg" / "label" / f"{hemi}.Schaefer.annot")
    atlases = _surface_atlas_set(names, left, right)
    np.testing.assert_allclose(_surface_cortex_coordinates(atlases, {}, surface), [[-20, 2, 2], [20, 0, 3]])
    # A volumetric atlas of the same parcels wins for the parcels it names.
    data = np.zeros((3, 3, 3), np.int16)
    data[0, 0, 0] = 4
    nib.save(nib.Nifti1Image(data, np.eye(4)), tmp_path / "cortex.nii.gz")
    pd.DataFrame({"index": [4], "name": ["7Networks_RH_Vis_1"]}).to_csv(tmp_path / "cortex.tsv", sep="\t", index=False)
    volume = {"cortical": {"image": str(tmp_path / "cortex.nii.gz"), "labels": str(tmp_path / "cortex.tsv")}}
    np.testing.assert_allclose(_surface_cortex_coordinates(atlases, volume, surface), [[-20, 2, 2], [0, 0, 0]])
    # Neither a mesh nor a twin: NaN, which the MAE refuses.
    elsewhere = {side: str(tmp_path / f"{side}.annot") for side in ("left", "right")}
    assert np.isnan(_surface_cortex_coordinates(atlases, {}, elsewhere)).all()


def test_the_shards_carry_coordinates_that_the_encoder_standardises(shards):
    data = PretrainingData(shards, tuple(subjects_of(shards)[:2]), 0)
    coordinates = data.mapping["channel_coordinates"]
    assert coordinates.shape == (457, 3) and np.isfinite(coordinates).all()
    assert np.unique(coordinates.round(3), axis=0).shape[0] == 457  # every channel has its own place
    standard = standardise_coordinates(coordinates)
    torch.testing.assert_close(standard.mean(dim=0), torch.zeros(3), atol=1e-5, rtol=0)
    assert abs(standard.pow(2).sum(dim=1).mean().item() - 3) < 1e-4
    model = BrainLMMAE(mae_run(), data).build()
    torch.testing.assert_close(model.encoder.coordinates, standard)


# --- masks ----------------------------------------------------------------------------------

@pytest.mark.parametrize("ratio", [0.2, 0.5, 0.75, 0.9])
def test_masks_have_the_ratio_and_are_disjoint(ratio):
    n_channels, n_patches = 457, 2
    n_visible, n_masked = mask_counts(n_channels * n_patches, ratio)
    assert n_masked == round(ratio * 914) and n_visible + n_masked == 914
    missing = torch.zeros(n_channels, dtype=torch.bool)
    missing[[3, 100, 456]] = True
    visible, masked = draw_token_masks(missing, n_patches, n_visible, torch.Generator().manual_seed(1))
    assert visible.shape == (n_visible,) and masked.shape == (n_masked,)
    assert sorted(torch.cat([visible, masked]).tolist()) == list(range(914))
    assert not missing[visible // n_patches].any()  # a missing channel is never visible


def test_dataset_masks_are_a_function_of_seed_pass_and_item(shards):
    subjects = tuple(subjects_of(shards)[:4])
    dataset = BrainLMMAE(mae_run(), PretrainingData(shards, subjects, 21)).dataset()
    x, missing, visible, masked = dataset[(0, 1)]
    assert x.shape == (457, 40) and missing.shape == (457,)
    assert (visible.shape, masked.shape) == ((228,), (686,))
    again = dataset[(0, 1)]
    assert all(torch.equal(a, b) for a, b in zip((x, missing, visible, masked), again))
    assert not torch.equal(dataset[(1, 1)][2], visible) and not torch.equal(dataset[(0, 2)][2], visible)
    other_seed = BrainLMMAE(mae_run(), PretrainingData(shards, subjects, 22)).dataset()
    assert not torch.equal(other_seed[(0, 1)][2], visible)


# --- loss -----------------------------------------------------------------------------------

def test_masked_patch_loss_on_known_inputs():
    target = torch.randn(2, 5, 20, generator=torch.Generator().manual_seed(0))
    every = torch.ones(2, 5)
    assert masked_patch_loss(target, target, every).item() == 0
    torch.testing.assert_close(masked_patch_loss(target + 0.5, target, every), torch.tensor(0.25))
    off = target.clone()
    off[0, 0] += 3.0  # a patch left out of the loss does not count
    weight = every.clone()
    weight[0, 0] = 0
    assert masked_patch_loss(off, target, weight).item() == 0
    torch.testing.assert_close(masked_patch_loss(off, target, every), torch.tensor(9.0 / 10))
    assert masked_patch_loss(off, target, torch.zeros(2, 5)).item() == 0


def test_missing_channels_neither_inform_nor_count():
    torch.manual_seed(0)
    config = MAEConfig(**MAE_SIZES["tiny"])
    model = MAETraining(config, torch.randn(457, 3) * 40)
    x = torch.randn(2, 457, 40)
    missing = torch.zeros(2, 457, dtype=torch.bool)
    missing[:, :30] = True
    n_visible, _ = mask_counts(config.n_tokens, 0.75)
    generator = torch.Generator().manual_seed(0)
    visible, masked = (torch.stack(parts) for parts in
                       zip(*[draw_token_masks(missing[b], config.n_patches, n_visible, generator) for b in range(2)]))
    loss = model(x, missing, visible, masked)["total"]
    changed = x.clone()
    changed[:, :30] = 1e3  # the missing channels' data
    assert torch.equal(model(changed, missing, visible, masked)["total"], loss)
    assert len(model.encoder.layer_outputs(x, missing)) == config.depth


# --- training, export, resume ------------------------------------------------------------------

def test_mae_is_found_by_its_run_name():
    assert get_objective("mae") is BrainLMMAE
    assert parse_run_name("mae-tiny") == (available_objectives()["mae"], "tiny")
    assert set(BrainLMMAE.presets) == {"tiny", "small", "base"}


def test_pretraining_exports_a_probeable_encoder_and_resumes_exactly(shards, tmp_path):
    subjects = subjects_of(shards)[:4]
    straight = pretrain(MAE, shards, subjects, tmp_path / "straight", log=lambda line: None)
    assert pretrain(MAE, shards, subjects, tmp_path / "resumed", stop_at_step=4, log=lambda line: None) is None
    resumed = pretrain(MAE, shards, subjects, tmp_path / "resumed", log=lambda line: None)
    first = pd.read_csv(tmp_path / "straight" / "log.csv")
    second = pd.read_csv(tmp_path / "resumed" / "log.csv")
    assert list(first["step"]) == list(range(8)) and first["loss"].notna().all()
    np.testing.assert_array_equal(first["loss"].to_numpy(), second["loss"].to_numpy())
    encoder = load_encoder(straight)
    assert encoder.has_cls and encoder.config.network_map == PretrainingData(shards, (), 0).network_map
    b = load_encoder(resumed).state_dict()
    assert all(torch.equal(value, b[key]) for key, value in encoder.state_dict().items())
    assert encoder.coordinates.abs().sum() > 0  # the positions travel with the export
    config = encoder.config
    with torch.no_grad():
        layers = encoder.layer_outputs(torch.randn(3, 457, config.crop_length), torch.zeros(3, 457, dtype=torch.bool))
    assert len(layers) == config.depth
    assert all(layer.shape == (3, 1 + config.n_tokens, config.width) for layer in layers)


# --- bad input ------------------------------------------------------------------------------

@pytest.mark.parametrize("settings, words", [
    (dict(SETTINGS, architecture={"patch_length": 30}), r"patch_length \(30\) does not divide crop_length \(40\)"),
    (dict(SETTINGS, architecture={"token_width": 48}), "token_width"),
    # the option's schema refuses 0 and 1 first (its words), the check the ratios that leave no token
    (mae_settings(mask_ratio=0.0), r"mask_ratio: mask_ratio must lie strictly between 0 and 1|"
                                   r"mae.mask_ratio': 0.0 is less than or equal to the minimum of 0"),
    (mae_settings(mask_ratio=1.0), r"strictly between 0 and 1|mae.mask_ratio': 1.0 is greater than or equal to "
                                   r"the maximum of 1"),
    (mae_settings(mask_ratio=1e-4), "leaves 914 visible and 0 masked"),
    (mae_settings(mask_ratio=0.9999), "leaves 0 visible and 914 masked"),
    (mae_settings(architecture={"decoder_width": 24}), r"decoder_width \(24\) must be even and a multiple of "
                                                       r"decoder_head_dim \(16\)"),
])
def test_bad_settings_are_refused_at_config_time(settings, words):
    with pytest.raises(ConfigError, match=words):
        run_spec(settings, "mae-tiny")


@pytest.mark.parametrize("pretrain, words", [
    ({"options": {"mae": {"ratio": 0.5}}}, r"pretrain.options.mae: unknown keys \['ratio'\]|'ratio' was unexpected"),
    ({"options": {"mae": {"mask_ratio": 1.0}}}, r"mae.mask_ratio'.*1.0"),
    ({"architecture": {"token_width": 48}}, "token_width"),
    ({"options": {"mae": {"mask_ratio": 1e-4}}}, "leaves 914 visible and 0 masked"),
])
def test_bad_options_are_refused_by_the_config_check(pretrain, words):
    with pytest.raises(ConfigError, match=words):
        validate_config({"pretrain": {"objectives": ["mae-tiny"], **pretrain}})


def test_token_width_equal_to_width_and_the_defaults_pass():
    run = run_spec(dict(SETTINGS, architecture={"token_width": 32}), "mae-tiny")
    assert run.architecture["token_width"] == 32 and run.options["mask_ratio"] == 0.75
    assert run.training["base_lr"] == 1.0e-3 and list(run.training["weight_decay"]) == [0.05, 0.05]
    for size in MAE_SIZES:
        run_spec(SETTINGS, f"mae-{size}")


def test_shards_without_coordinates_are_refused_with_the_fix(shards, tmp_path):
    folder = tmp_path / "shards"
    shutil.copytree(shards, folder)
    mapping = dict(np.load(folder / "network_mapping.npz"))
    del mapping["channel_coordinates"]
    np.savez(folder / "network_mapping.npz", **mapping)
    with pytest.raises(TrainingError, match=r"network_mapping.npz: no key 'channel_coordinates'.*rerun the "
                                            r"preprocess and shards rules"):
        pretrain(MAE, folder, subjects_of(folder)[:2], tmp_path / "run", log=lambda line: None)
    assert not (tmp_path / "run" / "checkpoint.pt").exists()
    coordinates = np.zeros((457, 3), np.float32)
    coordinates[7] = np.nan  # e.g. a surface parcel with neither a volumetric twin nor a mesh
    np.savez(folder / "network_mapping.npz", **mapping, channel_coordinates=coordinates)
    with pytest.raises(TrainingError, match=r"1 channels have no coordinates \(e.g. channels \[7\]\).*Set "
                                            r"atlases.cortical"):
        pretrain(MAE, folder, subjects_of(folder)[:2], tmp_path / "run", log=lambda line: None)
