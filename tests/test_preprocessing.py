"""Preprocessing: discovery, parcellation, denoising, temporal harmonisation, QC and bad input."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
from scipy import signal

from brainscale.config import validate_config
from brainscale.preprocessing.atlases import (SCHAEFER400_7N_SIZES, load_atlas_set, network_mapping,
                                              parcellation_weights)
from brainscale.preprocessing.batch import TIMESERIES_SUFFIX, preprocess_batch, write_network_mapping
from brainscale.preprocessing.discovery import (InputError, find_runs, load_participants, read_repetition_time,
                                                runs_fingerprint)
from brainscale.preprocessing.pipeline import (ParcellationCache, _leading_dummies, _load_confounds, load_bold,
                                               parcellate, preprocess_run)
from brainscale.preprocessing.temporal import band_pass, regress_confounds, resample_to_tr, zscore
from brainscale.simulate.dataset import SPACE, demo_atlas_paths

SETTINGS = validate_config({})["preprocess"]


def atlas_specs(dataset: Path) -> dict:
    return demo_atlas_paths(dataset, 6)


def runs_of(dataset: Path, **filters):
    return find_runs(dataset / "fmriprep", space=SPACE, task="rest", **filters)


@pytest.fixture(scope="module")
def atlas_set(tiny_dataset):
    return load_atlas_set(atlas_specs(tiny_dataset))


@pytest.fixture(scope="module")
def processed(tiny_dataset, atlas_set):
    """Every run of the tiny dataset, preprocessed with the default settings."""
    cache = ParcellationCache(atlas_set, SPACE)
    return {run.run_id: (run, preprocess_run(run, cache, SETTINGS)) for run in runs_of(tiny_dataset)}


@pytest.fixture
def derivatives_copy(tiny_dataset, tmp_path):
    """A writable copy of three subjects of the tiny dataset (for breaking files)."""
    root = tmp_path / "fmriprep"
    root.mkdir()
    for name in ("dataset_description.json", "participants.tsv"):
        shutil.copy(tiny_dataset / "fmriprep" / name, root / name)
    for subject in ("sub-0002", "sub-0004", "sub-0006"):
        shutil.copytree(tiny_dataset / "fmriprep" / subject, root / subject)
    return root


# --- discovery -------------------------------------------------------------------------------

def test_discovery_finds_every_run_with_its_files(tiny_dataset):
    runs = runs_of(tiny_dataset)
    truth = pd.read_csv(tiny_dataset / "ground_truth" / "runs.tsv", sep="\t")
    assert len(runs) == len(truth)
    for run in runs:
        assert Path(run.bold).is_file() and Path(run.sidecar).is_file() and Path(run.confounds).is_file()
        assert run.run_id.startswith(run.participant_id)
    assert [r.run_id for r in runs] == sorted(r.run_id for r in runs)


def test_discovery_filters(tiny_dataset):
    all_runs = runs_of(tiny_dataset)
    only_second_session = runs_of(tiny_dataset, sessions=["2"])
    assert only_second_session and all(r.session == "2" for r in only_second_session)
    second_runs = runs_of(tiny_dataset, runs=["02"])
    assert second_runs and all("_run-2" in r.run_id for r in second_runs)
    assert runs_of(tiny_dataset, res="6") == all_runs
    assert runs_of(tiny_dataset, res="2") == []
    assert find_runs(tiny_dataset / "fmriprep", space="MNI152NLin6Asym", task="rest") == []


def test_discovery_accepts_the_older_confounds_naming_and_flags_missing_ones(derivatives_copy):
    first, second = find_runs(derivatives_copy, space=SPACE, task="rest")[:2]
    Path(first.confounds).rename(first.confounds.replace("_timeseries.tsv", "_regressors.tsv"))
    Path(first.confounds.replace(".tsv", ".json")).rename(first.confounds.replace("_timeseries.tsv",
                                                                                  "_regressors.json"))
    Path(second.confounds).unlink()
    found = {r.run_id: r for r in find_runs(derivatives_copy, space=SPACE, task="rest")}
    assert found[first.run_id].confounds.endswith("_desc-confounds_regressors.tsv")
    assert found[second.run_id].confounds is None


def test_fingerprint_changes_with_a_run_file_and_only_its_batch(derivatives_copy):
    runs = find_runs(derivatives_copy, space=SPACE, task="rest")
    first, second = runs[:2], runs[2:4]
    before = runs_fingerprint(first), runs_fingerprint(second)
    assert runs_fingerprint(first) == before[0]  # stable
    confounds = Path(first[1].confounds)
    confounds.write_text(confounds.read_text() + "\n")
    assert runs_fingerprint(first) != before[0] and runs_fingerprint(second) == before[1]
    Path(first[0].sidecar).unlink()
    assert runs_fingerprint(first) != before[0]


def test_discovery_refuses_ambiguous_resolutions(derivatives_copy):
    run = find_runs(derivatives_copy, space=SPACE, task="rest")[0]
    shutil.copy(run.bold, run.bold.replace("_res-6_", "_res-2_"))
    with pytest.raises(InputError, match="several resolutions.*data.res"):
        find_runs(derivatives_copy, space=SPACE, task="rest")
    assert len(find_runs(derivatives_copy, space=SPACE, task="rest", res="2")) == 1


def test_repetition_time_sidecar_header_and_disagreement(tmp_path):
    sidecar = tmp_path / "x_bold.json"
    assert read_repetition_time("x.nii.gz", sidecar, 0.8) == 0.8  # no sidecar: the header
    sidecar.write_text(json.dumps({"RepetitionTime": 2.0}))
    assert read_repetition_time("x.nii.gz", sidecar, 2.0) == 2.0
    assert read_repetition_time("x.nii.gz", sidecar, None) == 2.0
    with pytest.raises(InputError, match=r"x.nii.gz: RepetitionTime 2.0 s in x_bold.json disagrees.*0.8"):
        read_repetition_time("x.nii.gz", sidecar, 0.8)


def test_participants_are_mapped_and_checked(tiny_dataset, tmp_path):
    table = load_participants(tiny_dataset / "fmriprep" / "participants.tsv", {"sex": "sex", "iq": "fluid_intelligence"})
    assert list(table.columns) == ["sex", "iq"] and table.index[0].startswith("sub-")
    with pytest.raises(InputError, match="handedness"):
        load_participants(tiny_dataset / "fmriprep" / "participants.tsv", {"hand": "handedness"})


# --- atlases and network order ---------------------------------------------------------------

def test_network_mapping_has_reference_keys_and_counts(tiny_dataset, atlas_set, tmp_path):
    write_network_mapping(atlas_specs(tiny_dataset), tmp_path / "network_mapping.npz", tmp_path / "channels.tsv")
    mapping = dict(np.load(tmp_path / "network_mapping.npz"))
    assert set(mapping) == {"network_map_schaefer400_7n", "network_map_tian3", "network_map_buckner7",
                            "channel_coordinates"}
    coordinates = mapping["channel_coordinates"]
    assert coordinates.shape == (457, 3) and np.isfinite(coordinates).all()
    assert (coordinates[:200, 0] < 0).mean() > 0.9 and (coordinates[200:400, 0] > 0).mean() > 0.9  # LH, RH
    cortical = mapping["network_map_schaefer400_7n"]
    assert tuple(np.bincount(cortical)) == SCHAEFER400_7N_SIZES
    for half in (cortical[:200], cortical[200:]):
        assert (np.diff(half) >= 0).all()
    assert mapping["network_map_tian3"].shape == (50,) and len(set(mapping["network_map_tian3"])) == 1
    assert mapping["network_map_buckner7"].shape == (7,) and len(set(mapping["network_map_buckner7"])) == 1
    channels = pd.read_csv(tmp_path / "channels.tsv", sep="\t")
    assert len(channels) == 457 and list(np.bincount(channels["network"])) == list(SCHAEFER400_7N_SIZES) + [50, 7]
    assert channels["name"].iloc[0].startswith("7Networks_LH_Vis")


def test_seventeen_network_atlas_is_reordered_to_seven_networks(tiny_dataset, tmp_path):
    specs = atlas_specs(tiny_dataset)
    table = pd.read_csv(specs["cortical"]["labels"], sep="\t")
    split = {"Vis": ("VisCent", "VisPeri"), "SomMot": ("SomMotA", "SomMotB"), "DorsAttn": ("DorsAttnA", "DorsAttnB"),
             "SalVentAttn": ("SalVentAttnA", "SalVentAttnB"), "Limbic": ("LimbicA", "LimbicB"),
             "Cont": ("ContA", "ContB", "ContC"), "Default": ("DefaultA", "DefaultB", "DefaultC", "TempPar")}
    rng = np.random.default_rng(0)
    names = []
    for name in table["name"]:
        _, hemi, network, *_ = name.split("_")
        names.append(f"17Networks_{hemi}_{rng.choice(split[network])}_{len(names) + 1}")
    shuffled = rng.permutation(len(table))  # 17-network tables list parcels in another order
    table17 = pd.DataFrame({"index": table["index"].to_numpy()[shuffled], "name": np.array(names)[shuffled]})
    labels17 = tmp_path / "tpl-MNI152NLin2009cAsym_atlas-Schaefer2018_desc-400Parcels17Networks_dseg.tsv"
    table17.to_csv(labels17, sep="\t", index=False)
    specs["cortical"]["labels"] = str(labels17)
    specs["cortical_7n"] = atlas_specs(tiny_dataset)["cortical"]  # 17-network names need the 7-network atlas
    atlases = load_atlas_set(specs)
    mapping = network_mapping(atlases)
    assert tuple(np.bincount(mapping["network_map_schaefer400_7n"])) == SCHAEFER400_7N_SIZES
    assert mapping["network_map_schaefer400_17n"].shape == (400,)
    # The parcels are the same as in the 7-network table, grouped the same way.
    original = load_atlas_set(atlas_specs(tiny_dataset))
    for k in range(7):
        assert set(atlases.labels["cortical"][atlases.cortical_network_7 == k]) == \
            set(original.labels["cortical"][original.cortical_network_7 == k])


def test_atlas_with_labels_missing_from_its_table_is_refused(tiny_dataset, tmp_path):
    specs = atlas_specs(tiny_dataset)
    table = pd.read_csv(specs["subcortical"]["labels"], sep="\t")
    truncated = tmp_path / "tian.tsv"
    table.iloc[:-2].to_csv(truncated, sep="\t", index=False)
    specs["subcortical"]["labels"] = str(truncated)
    with pytest.raises(InputError, match=r"label values \[49, 50\] are in the image but not in tian.tsv"):
        load_atlas_set(specs)


def test_atlas_in_another_space_is_refused(tiny_dataset, atlas_set, tmp_path):
    run = runs_of(tiny_dataset)[0]
    image = nib.load(run.bold)
    with pytest.raises(InputError, match="space MNI152NLin2009cAsym but the BOLD runs in MNI152NLin6Asym"):
        parcellation_weights(atlas_set, image, bold_space="MNI152NLin6Asym")
    # Same name, but the grid sits somewhere else entirely: caught by the brain-mask overlap.
    shifted = nib.Nifti1Image(np.zeros(image.shape[:3], np.int8), image.affine.copy())
    shifted.affine[:3, 3] += 60.0
    mask = nib.Nifti1Image(np.ones(image.shape[:3], np.uint8), image.affine)
    moved = nib.Nifti1Image(np.ones(image.shape[:3], np.uint8), shifted.affine)
    parcellation_weights(atlas_set, image, bold_space=SPACE, brain_mask=mask)  # fine on its own grid
    with pytest.raises(InputError, match="looks like another space"):
        parcellation_weights(atlas_set, shifted, bold_space=SPACE,
                             brain_mask=nib.Nifti1Image(np.asarray(nib.load(
                                 run.bold.replace("desc-preproc_bold", "desc-brain_mask")).dataobj), moved.affine))


def test_atlas_on_another_grid_is_resampled_nearest_neighbour(tiny_dataset, atlas_set):
    from nilearn.image import resample_img

    run = runs_of(tiny_dataset)[0]
    image, data = load_bold(run.bold)
    voxels, weights = parcellation_weights(atlas_set, image, bold_space=SPACE)
    # The same atlases on a 3 mm grid come back to the same parcels on the BOLD grid.
    fine = {kind: resample_img(atlas_set.images[kind], target_affine=np.diag([3.0, 3.0, 3.0]),
                               interpolation="nearest", force_resample=True, copy_header=True)
            for kind in atlas_set.images}
    moved = type(atlas_set)(images=fine, labels=atlas_set.labels, names=atlas_set.names,
                            cortical_network_7=atlas_set.cortical_network_7, cortical_network_17=None, space=SPACE)
    voxels_back, weights_back = parcellation_weights(moved, image, bold_space=SPACE)
    agreement = np.corrcoef(parcellate(data, voxels, weights)[:, :400].ravel(),
                            parcellate(data, voxels_back, weights_back)[:, :400].ravel())[0, 1]
    assert agreement > 0.99


# --- parcellation ----------------------------------------------------------------------------

def test_parcellation_equals_a_direct_computation_and_nilearn(tiny_dataset, atlas_set):
    from nilearn.maskers import NiftiLabelsMasker

    run = runs_of(tiny_dataset)[1]
    image, data = load_bold(run.bold)
    voxels, weights = parcellation_weights(atlas_set, image, bold_space=SPACE)
    fast = parcellate(data, voxels, weights)
    values = image.get_fdata()
    offset = 0
    for kind in ("cortical", "subcortical", "cerebellar"):
        labels = np.asarray(atlas_set.images[kind].dataobj)
        for position, label in enumerate(atlas_set.labels[kind]):
            direct = values[labels == label].mean(axis=0)
            np.testing.assert_allclose(fast[:, offset + position], direct, rtol=1e-10)
        masker = NiftiLabelsMasker(atlas_set.images[kind]).fit()
        reference = masker.transform(image)
        order = [list(np.unique(labels[labels > 0])).index(v) for v in atlas_set.labels[kind]]
        np.testing.assert_allclose(fast[:, offset:offset + len(order)], reference[:, order], atol=1e-5, rtol=0)
        offset += len(atlas_set.labels[kind])


def test_nan_and_constant_voxels_are_handled(tiny_dataset, atlas_set, tmp_path):
    run = runs_of(tiny_dataset)[0]
    image, data = load_bold(run.bold)
    voxels, weights = parcellation_weights(atlas_set, image, bold_space=SPACE)
    corrupted = data.astype(np.float32)
    cortical = np.asarray(atlas_set.images["cortical"].dataobj)
    corrupted[cortical == atlas_set.labels["cortical"][0]] = np.nan  # one whole parcel all-NaN
    one_voxel = np.argwhere(cortical == atlas_set.labels["cortical"][1])[0]
    corrupted[tuple(one_voxel)] = np.nan  # one voxel of another parcel
    corrupted[cortical == atlas_set.labels["cortical"][2]] = 5.0  # a constant parcel
    result = parcellate(corrupted, voxels, weights)
    assert np.isnan(result[:, 0]).all()
    assert np.isfinite(result[:, 1:]).all()
    assert np.allclose(result[:, 2], 5.0)
    path = tmp_path / Path(run.bold).name
    header = image.header.copy()
    header.set_data_dtype(np.float32)
    nib.save(nib.Nifti1Image(corrupted, image.affine, header), path)
    shutil.copy(run.sidecar, tmp_path / Path(run.sidecar).name)
    for name in (Path(run.confounds).name, Path(run.confounds).with_suffix(".json").name):
        shutil.copy(Path(run.confounds).parent / name, tmp_path / name)
    moved = type(run)(run_id=run.run_id, participant_id=run.participant_id, session=run.session, bold=str(path),
                      sidecar=str(tmp_path / Path(run.sidecar).name),
                      confounds=str(tmp_path / Path(run.confounds).name))
    outcome = preprocess_run(moved, ParcellationCache(atlas_set, SPACE), SETTINGS)
    assert outcome.qc["n_empty_rois"] == 1 and outcome.qc["n_constant_rois"] == 1
    assert not outcome.qc["included"] and "empty_or_constant_rois" in outcome.qc["exclusion"]
    assert np.isfinite(outcome.timeseries).all() and outcome.channel_missing[:3].tolist() == [True, False, True]


# --- denoising and temporal harmonisation ----------------------------------------------------

def test_outputs_are_zscored_band_limited_and_resampled(processed):
    for run_id, (run, result) in processed.items():
        qc = result.qc
        steady = qc["n_volumes_in"] - qc["n_dummy"]
        assert qc["n_volumes_out"] == int(np.ceil(steady * qc["source_tr"] / 2.0))
        assert abs(qc["n_volumes_out"] - steady * qc["source_tr"] / 2.0) < 1
        series = result.timeseries
        assert series.shape == (457, qc["n_volumes_out"]) and series.dtype == np.float32
        np.testing.assert_allclose(series.mean(axis=1), 0, atol=1e-5)
        np.testing.assert_allclose(series.std(axis=1), 1, atol=1e-4)
        if qc["n_volumes_out"] < 100:
            continue
        frequencies, power = signal.periodogram(series, fs=0.5, axis=1, detrend=False)
        total = power.sum(axis=1)
        # A guard band either side of the 0.01-0.1 Hz pass band: just outside it the zero-phase
        # Butterworth's skirt still passes a share that depends on the input (the simulator's slow
        # individual modes put more power there), farther out it must be gone.
        outside = power[:, (frequencies < 0.006) | (frequencies > 0.13)].sum(axis=1)
        assert np.median(outside / total) < 0.03, (run_id, np.median(outside / total))


def test_resampling_does_not_alias():
    """A 0.35 Hz oscillation sampled at TR 0.8 s would alias to 0.15 Hz at TR 2 s; it must vanish."""
    times = np.arange(750) * 0.8
    slow, fast = np.sin(2 * np.pi * 0.05 * times), np.sin(2 * np.pi * 0.35 * times + 0.3)
    resampled = resample_to_tr(np.column_stack([slow, fast]), 0.8, 2.0)
    assert len(resampled) == 300
    middle = slice(20, -20)
    target_times = np.arange(300) * 2.0
    assert np.corrcoef(resampled[middle, 0], np.sin(2 * np.pi * 0.05 * target_times)[middle])[0, 1] > 0.99
    assert resampled[middle, 1].std() < 0.05  # the naive decimation would keep an amplitude near 0.7
    for tr in (0.72, 1.5, 2.5):
        n = 400
        assert len(resample_to_tr(np.zeros((n, 2)), tr, 2.0)) == int(np.ceil(n * tr / 2.0))


def test_zscore_is_nan_safe():
    data = np.column_stack([np.arange(10.0), np.full(10, 3.0), np.full(10, np.nan)])
    data[4, 0] = np.nan
    scored, constant = zscore(data)
    assert constant.tolist() == [False, True, True]
    assert np.isfinite(scored).all() and np.allclose(scored[:, 1:], 0)


def test_planted_motion_spikes_are_removed(tiny_dataset, atlas_set):
    truth = pd.read_csv(tiny_dataset / "ground_truth" / "runs.tsv", sep="\t")
    cache = ParcellationCache(atlas_set, SPACE)
    checked = 0
    for run in runs_of(tiny_dataset):
        if not truth.loc[truth["bold"].str.contains(run.run_id), "high_motion"].iloc[0]:
            continue
        image, data = load_bold(run.bold)
        table, confounds, kept = _load_confounds(run, data.shape[3], SETTINGS["denoise"])
        parcels = parcellate(data, *cache.weights_for(image, None))
        start = _leading_dummies(table)
        fd = table["framewise_displacement"].to_numpy()[start:]
        valid = np.isfinite(fd)

        def coupling(values):
            return np.mean([abs(np.corrcoef(values[valid, i], fd[valid])[0, 1]) for i in range(values.shape[1])])

        before = coupling(parcels[start:])
        after = coupling(regress_confounds(parcels[start:], confounds[start:], kept[start:]))
        assert before > 0.4 and after < 0.15 and after < before / 3, (run.run_id, before, after)
        checked += 1
    assert checked >= 1


def test_band_pass_rejects_impossible_bands():
    with pytest.raises(ValueError, match="Nyquist"):
        band_pass(np.zeros((50, 1)), 2.0, 0.01, 0.3)


# --- QC and bad input through a batch ---------------------------------------------------------

def run_batch(derivatives: Path, tiny_dataset: Path, output: Path, participants=None):
    runs = find_runs(derivatives, space=SPACE, task="rest")
    table = preprocess_batch(runs, atlas_specs(tiny_dataset), SETTINGS, output, space=SPACE,
                             participants=participants, log=lambda line: None)
    return runs, table.set_index("run_id")


def test_batch_writes_included_runs_and_a_qc_row_for_every_run(derivatives_copy, tiny_dataset, tmp_path):
    runs, qc = run_batch(derivatives_copy, tiny_dataset, tmp_path / "batch")
    assert set(qc.index) == {r.run_id for r in runs}
    written = {p.name.removesuffix(TIMESERIES_SUFFIX) for p in (tmp_path / "batch").glob(f"*{TIMESERIES_SUFFIX}")}
    assert written == set(qc.index[qc["included"]])
    archive = np.load(tmp_path / "batch" / f"{sorted(written)[0]}{TIMESERIES_SUFFIX}")
    assert archive["timeseries"].shape[0] == 457 and float(archive["repetition_time"]) == 2.0
    truth = pd.read_csv(tiny_dataset / "ground_truth" / "runs.tsv", sep="\t")
    for _, row in truth.iterrows():
        run_id = Path(row["bold"]).name.split("_space-")[0]
        if run_id in qc.index and (row["high_motion"] or row["short"]):
            assert not qc.loc[run_id, "included"], run_id  # the planted bad runs fail QC


def break_and_run(derivatives_copy, tiny_dataset, tmp_path, breaker):
    runs = find_runs(derivatives_copy, space=SPACE, task="rest")
    victim = runs[0]
    breaker(victim)
    _, qc = run_batch(derivatives_copy, tiny_dataset, tmp_path / "batch")
    others = qc.drop(index=victim.run_id)
    assert others["reason"].fillna("").str.contains("input error").sum() == 0
    assert others["n_volumes_out"].notna().all()  # every other run was processed
    return victim, qc.loc[victim.run_id]


def _truncate(path):
    raw = Path(path).read_bytes()
    Path(path).write_bytes(raw[: len(raw) // 2])


def _three_d(run):
    image = nib.load(run.bold)
    nib.save(nib.Nifti1Image(np.asarray(image.dataobj)[..., 0], image.affine), run.bold)


def _shorten_confounds(run):
    table = pd.read_csv(run.confounds, sep="\t")
    table.iloc[:-5].to_csv(run.confounds, sep="\t", index=False, na_rep="n/a")


def _wrong_tr(run):
    sidecar = json.loads(Path(run.sidecar).read_text())
    sidecar["RepetitionTime"] = sidecar["RepetitionTime"] * 2
    Path(run.sidecar).write_text(json.dumps(sidecar))


@pytest.mark.parametrize("breaker, expected", [
    (lambda run: Path(run.confounds).unlink(), "no confounds file beside it"),
    (_shorten_confounds, "rows but the image has"),
    (_wrong_tr, "disagrees with the NIfTI header"),
    (_three_d, "a 4-D BOLD series"),
    (lambda run: _truncate(run.bold), "truncated or corrupt"),
])
def test_bad_run_is_excluded_with_a_clear_reason_and_others_go_on(derivatives_copy, tiny_dataset, tmp_path,
                                                                   breaker, expected):
    victim, row = break_and_run(derivatives_copy, tiny_dataset, tmp_path, breaker)
    assert not row["included"] and row["exclusion"] == "input_error"
    assert expected in row["reason"]
    assert Path(victim.bold).name in row["reason"] or Path(victim.confounds or victim.bold).name in row["reason"]


def test_short_run_is_excluded(derivatives_copy, tiny_dataset, tmp_path):
    def shorten(run):
        image = nib.load(run.bold)
        nib.save(nib.Nifti1Image(np.asarray(image.dataobj)[..., :60], image.affine, image.header), run.bold)
        table = pd.read_csv(run.confounds, sep="\t")
        table.iloc[:60].to_csv(run.confounds, sep="\t", index=False, na_rep="n/a")

    _, row = break_and_run(derivatives_copy, tiny_dataset, tmp_path, shorten)
    assert not row["included"] and "too_short" in row["exclusion"] and "100-TR crop" in row["reason"]


def test_subject_missing_from_participants_is_kept_with_a_note(derivatives_copy, tiny_dataset, tmp_path):
    participants = load_participants(derivatives_copy / "participants.tsv", {"sex": "sex"})
    runs, qc = run_batch(derivatives_copy, tiny_dataset, tmp_path / "batch",
                         participants=participants.index.drop("sub-0002"))
    notes = qc["note"].fillna("")
    assert notes[notes.index.str.startswith("sub-0002")].str.contains("not in participants.tsv").all()
    assert (notes[~notes.index.str.startswith("sub-0002")] == "").all()


# --- surface and XCP-D inputs ----------------------------------------------------------------

def _write_surface_run(tiny_dataset: Path, folder: Path, volume_run, atlas_set, with_volume: bool):
    """A fake fsaverage5 run whose parcel signals are the volume run's cortical parcel means."""
    folder.mkdir(parents=True, exist_ok=True)
    image, data = load_bold(volume_run.bold)
    voxels, weights = parcellation_weights(atlas_set, image, bold_space=SPACE)
    cortical = parcellate(data, voxels, weights)[:, :400]  # channel order
    n_vertices, rng = 10242, np.random.default_rng(0)
    stem = volume_run.run_id
    atlas_files = {}
    for side, hemi, offset in (("left", "L", 0), ("right", "R", 200)):
        names = ["???"] + atlas_set.names["cortical"][offset:offset + 200]  # 0 is the medial wall
        labels = np.concatenate([np.zeros(242, int), np.repeat(np.arange(1, 201), 50)])
        rng.shuffle(labels)
        annot = folder / f"{hemi.lower()}h.Schaefer400_7Networks.annot"
        colours = np.column_stack([rng.integers(0, 255, (201, 3)), np.zeros(201, int)])
        nib.freesurfer.write_annot(str(annot), labels, colours, names, fill_ctab=True)
        atlas_files[side] = str(annot)
        series = np.zeros((n_vertices, len(cortical)), np.float32)
        inside = labels > 0
        series[inside] = cortical[:, offset + labels[inside] - 1].T + rng.normal(0, 5, (inside.sum(), len(cortical)))
        arrays = [nib.gifti.GiftiDataArray(series[:, t], intent="NIFTI_INTENT_TIME_SERIES", datatype="NIFTI_TYPE_FLOAT32",
                                           meta={"TimeStep": str(1000 * float(image.header.get_zooms()[3]))})
                  for t in range(series.shape[1])]
        name = f"{stem}_hemi-{hemi}_space-fsaverage5_bold.func.gii"
        nib.save(nib.GiftiImage(darrays=arrays), folder / name)
        shutil.copy(volume_run.sidecar, folder / name.replace(".func.gii", ".json"))
    for source in (volume_run.confounds, volume_run.confounds.replace(".tsv", ".json")):
        shutil.copy(source, folder / Path(source).name)
    if with_volume:
        for source in (volume_run.bold, volume_run.sidecar):
            shutil.copy(source, folder / Path(source).name)
    return atlas_files


@pytest.mark.parametrize("with_volume", [True, False])
def test_surface_runs(tiny_dataset, atlas_set, processed, tmp_path, with_volume):
    volume_run = runs_of(tiny_dataset)[1]
    func = tmp_path / "fmriprep" / volume_run.participant_id / "func"
    surface = _write_surface_run(tiny_dataset, func, volume_run, atlas_set, with_volume)
    runs = find_runs(tmp_path / "fmriprep", space=SPACE, task="rest", kind="surface")
    assert len(runs) == 1 and runs[0].kind == "surface" and (runs[0].bold is not None) == with_volume
    surface_atlases = load_atlas_set(atlas_specs(tiny_dataset), surface)
    assert surface_atlases.names["cortical"] == atlas_set.names["cortical"]
    result = preprocess_run(runs[0], ParcellationCache(surface_atlases, SPACE), SETTINGS)
    assert result.qc["included"], result.qc["reason"]
    expected = processed[volume_run.run_id][1].timeseries
    agreement = np.mean([np.corrcoef(result.timeseries[c], expected[c])[0, 1] for c in range(400)])
    assert agreement > 0.9
    missing = result.channel_missing
    assert not missing[:400].any()
    assert missing[400:].all() != with_volume
    if with_volume:
        np.testing.assert_allclose(result.timeseries[400:], expected[400:], atol=1e-4)
    else:
        assert np.all(result.timeseries[400:] == 0)


def test_xcpd_tables(tiny_dataset, atlas_set, processed, tmp_path):
    volume_run = runs_of(tiny_dataset)[1]
    image, data = load_bold(volume_run.bold)
    voxels, weights = parcellation_weights(atlas_set, image, bold_space=SPACE)
    table, confounds, kept = _load_confounds(volume_run, data.shape[3], SETTINGS["denoise"])
    start = _leading_dummies(table)
    cleaned = regress_confounds(parcellate(data, voxels, weights)[start:], confounds[start:], kept[start:])
    func = tmp_path / "xcp_d" / volume_run.participant_id / "func"
    func.mkdir(parents=True)
    names = atlas_set.names["cortical"] + atlas_set.names["subcortical"]  # no cerebellar table
    frame = pd.DataFrame(cleaned[:, :450], columns=names)
    tr = float(image.header.get_zooms()[3])
    for seg, columns in (("4S400Parcels", names[:400]), ("Tian", names[400:])):
        path = func / f"{volume_run.run_id}_space-{SPACE}_seg-{seg}_stat-mean_timeseries.tsv"
        frame[columns].to_csv(path, sep="\t", index=False)
        path.with_suffix(".json").write_text(json.dumps({"SamplingFrequency": 1.0 / tr}))
    runs = find_runs(tmp_path / "xcp_d", space=SPACE, task="rest", kind="xcpd", segmentations=["4S400Parcels", "Tian"])
    assert len(runs) == 1 and len(runs[0].tables) == 2
    result = preprocess_run(runs[0], ParcellationCache(atlas_set, SPACE), SETTINGS)
    assert result.qc["included"] and result.qc["source_tr"] == pytest.approx(tr)
    assert result.channel_missing[450:].all() and not result.channel_missing[:450].any()
    expected = processed[volume_run.run_id][1].timeseries
    agreement = np.mean([np.corrcoef(result.timeseries[c], expected[c])[0, 1] for c in range(450)])
    assert agreement > 0.99
