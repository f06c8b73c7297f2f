"""Every fMRIPrep naming in use: file names of 20.2 LTS and 21+, and old and current confounds columns."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from brainscale.bids import parse_fmriprep_name, run_id_of
from brainscale.config import validate_config
from brainscale.preprocessing.atlases import load_atlas_set, parcellation_weights
from brainscale.preprocessing.discovery import InputError, find_runs, no_runs_message
from brainscale.preprocessing.pipeline import (ParcellationCache, _leading_dummies, _load_confounds, load_bold,
                                               normalise_confounds_names, parcellate, preprocess_run)
from brainscale.simulate.dataset import SPACE, demo_atlas_paths

SETTINGS = validate_config({})["preprocess"]


def _settings(**denoise) -> dict:
    return dict(SETTINGS, denoise=dict(SETTINGS["denoise"], **denoise))


def _touch(folder: Path, *names: str) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for name in names:
        (folder / name).write_text("")


# --- names -----------------------------------------------------------------------------------

@pytest.mark.parametrize("name, entities, legacy", [
    ("sub-01_task-rest_space-fsaverage5_hemi-L.func.gii",  # fMRIPrep 20.2 LTS
     {"sub": "01", "task": "rest", "hemi": "L", "space": "fsaverage5"}, True),
    ("sub-01_task-rest_space-fsaverage5_hemi-R_bold.func.gii",
     {"sub": "01", "task": "rest", "hemi": "R", "space": "fsaverage5"}, True),
    ("sub-01_task-rest_hemi-L_space-fsaverage5_bold.func.gii",  # fMRIPrep 21+
     {"sub": "01", "task": "rest", "hemi": "L", "space": "fsaverage5"}, False),
    ("sub-01_ses-2_task-rest_acq-mb4_rec-norm_dir-PA_run-3_echo-1_space-fsaverage_den-10k_hemi-L.func.gii",
     {"sub": "01", "ses": "2", "task": "rest", "acq": "mb4", "rec": "norm", "dir": "PA", "run": "3", "echo": "1",
      "hemi": "L", "space": "fsaverage", "den": "10k"}, True),
    ("sub-01_task-rest_acq-mb4_dir-AP_run-1_space-MNI152NLin2009cAsym_res-2_desc-preproc_bold.nii.gz",
     {"sub": "01", "task": "rest", "acq": "mb4", "dir": "AP", "run": "1", "space": "MNI152NLin2009cAsym",
      "res": "2", "desc": "preproc"}, False),
])
def test_fmriprep_names_of_every_version_parse(name, entities, legacy):
    parsed = parse_fmriprep_name(name)
    assert parsed["entities"] == entities and parsed["suffix"] == "bold" and parsed["legacy"] == legacy
    assert list(parsed["entities"]) == [key for key in entities]  # BIDS order whatever the file's order
    assert run_id_of(parsed["entities"]) == name.split("_hemi-")[0].split("_space-")[0]


@pytest.mark.parametrize("name", ["sub-01_task-rest_space-MNI_hemi-L.nii.gz",
                                  "sub-01_task-rest_hemi-L_bold_x.func.gii",
                                  "sub-01_task-rest_hemi-L_space-fs_hemi-R.func.gii",
                                  "task-rest_space-fs_hemi-L.func.gii"])
def test_names_that_are_neither_layout_are_refused(name):
    with pytest.raises(ValueError):
        parse_fmriprep_name(name)


def _layouts(root: Path) -> None:
    """Empty files named as fMRIPrep 20.2 LTS and 21+ write them (discovery never opens a file)."""
    space = "space-MNI152NLin2009cAsym"
    # sub-01: fMRIPrep 20.2 LTS, no res-, surfaces with hemi after space and no _bold, no surface sidecar
    _touch(root / "sub-01" / "func", f"sub-01_task-rest_{space}_desc-preproc_bold.nii.gz",
           f"sub-01_task-rest_{space}_desc-preproc_bold.json", f"sub-01_task-rest_{space}_desc-brain_mask.nii.gz",
           "sub-01_task-rest_space-fsaverage5_hemi-L.func.gii", "sub-01_task-rest_space-fsaverage5_hemi-R.func.gii",
           "sub-01_task-rest_space-T1w_desc-preproc_bold.nii.gz",
           "sub-01_task-rest_desc-confounds_timeseries.tsv", "sub-01_task-rest_desc-confounds_timeseries.json")
    # sub-02: fMRIPrep 21+, res-2, hemi before space, den- instead of fsaverage5
    _touch(root / "sub-02" / "ses-1" / "func",
           f"sub-02_ses-1_task-rest_run-1_{space}_res-2_desc-preproc_bold.nii.gz",
           f"sub-02_ses-1_task-rest_run-1_{space}_res-2_desc-preproc_bold.json",
           "sub-02_ses-1_task-rest_run-1_hemi-L_space-fsaverage_den-10k_bold.func.gii",
           "sub-02_ses-1_task-rest_run-1_hemi-R_space-fsaverage_den-10k_bold.func.gii",
           "sub-02_ses-1_task-rest_run-1_hemi-L_space-fsaverage_den-10k_bold.json",
           "sub-02_ses-1_task-rest_run-1_desc-confounds_timeseries.tsv")
    # sub-03: runs that differ only in acq-, rec-, dir- or echo-, each with its own confounds
    func = root / "sub-03" / "func"
    for variant in ("acq-fast", "acq-slow", "rec-norm", "dir-AP", "dir-PA", "echo-1", "echo-2"):
        stem = f"sub-03_task-rest_{variant}"
        _touch(func, f"{stem}_hemi-L_space-fsaverage5_bold.func.gii", f"{stem}_hemi-R_space-fsaverage5_bold.func.gii",
               f"{stem}_{space}_res-2_desc-preproc_bold.nii.gz", f"{stem}_{space}_res-2_desc-preproc_bold.json")
        if not variant.startswith("echo"):
            _touch(func, f"{stem}_desc-confounds_timeseries.tsv")
    _touch(func, "sub-03_task-rest_desc-confounds_timeseries.tsv")  # the echoes' one table (multi-echo)
    # sub-04: a left hemisphere without its right twin is no run
    _touch(root / "sub-04" / "func", "sub-04_task-rest_hemi-L_space-fsaverage5_bold.func.gii")


def test_volumes_of_20_2_and_21_are_found_with_their_own_files(tmp_path):
    _layouts(tmp_path)
    runs = {run.run_id: run for run in find_runs(tmp_path, space=SPACE, task="rest")}
    variants = ["acq-fast", "acq-slow", "dir-AP", "dir-PA", "echo-1", "echo-2", "rec-norm"]
    assert sorted(runs) == sorted(["sub-01_task-rest", "sub-02_ses-1_task-rest_run-1"]
                                  + [f"sub-03_task-rest_{v}" for v in variants])
    old = runs["sub-01_task-rest"]
    assert Path(old.bold).name == f"sub-01_task-rest_space-{SPACE}_desc-preproc_bold.nii.gz"
    assert Path(old.sidecar).name == f"sub-01_task-rest_space-{SPACE}_desc-preproc_bold.json"
    assert Path(old.confounds).name == "sub-01_task-rest_desc-confounds_timeseries.tsv"
    assert Path(runs["sub-02_ses-1_task-rest_run-1"].bold).name.endswith("_res-2_desc-preproc_bold.nii.gz")
    for variant in variants:
        run = runs[f"sub-03_task-rest_{variant}"]
        assert f"_{variant}_" in Path(run.bold).name and f"_{variant}_" in Path(run.sidecar).name
        expected = "sub-03_task-rest" if variant.startswith("echo") else f"sub-03_task-rest_{variant}"
        assert Path(run.confounds).name == f"{expected}_desc-confounds_timeseries.tsv"
    assert find_runs(tmp_path, space=SPACE, task="rest", res="2", sessions=["1"]) == [
        runs["sub-02_ses-1_task-rest_run-1"]]


def test_surfaces_of_20_2_and_21_are_found_with_their_own_files(tmp_path):
    _layouts(tmp_path)
    runs = {run.run_id: run for run in find_runs(tmp_path, space=SPACE, task="rest", kind="surface")}
    assert len(runs) == 9 and all(run.kind == "surface" for run in runs.values())
    old = runs["sub-01_task-rest"]  # 20.2: hemi after space, no _bold, no sidecar of its own
    assert [Path(p).name for p in old.surfaces] == ["sub-01_task-rest_space-fsaverage5_hemi-L.func.gii",
                                                     "sub-01_task-rest_space-fsaverage5_hemi-R.func.gii"]
    assert Path(old.bold).name == f"sub-01_task-rest_space-{SPACE}_desc-preproc_bold.nii.gz"
    assert Path(old.sidecar).name == f"sub-01_task-rest_space-{SPACE}_desc-preproc_bold.json"
    assert Path(old.confounds).name == "sub-01_task-rest_desc-confounds_timeseries.tsv"
    new = runs["sub-02_ses-1_task-rest_run-1"]  # space-fsaverage_den-10k is fsaverage5
    assert Path(new.surfaces[1]).name == "sub-02_ses-1_task-rest_run-1_hemi-R_space-fsaverage_den-10k_bold.func.gii"
    assert Path(new.sidecar).name == "sub-02_ses-1_task-rest_run-1_hemi-L_space-fsaverage_den-10k_bold.json"
    for variant in ("acq-fast", "acq-slow", "rec-norm", "dir-AP", "dir-PA", "echo-1", "echo-2"):
        run = runs[f"sub-03_task-rest_{variant}"]
        assert all(f"_{variant}_" in Path(p).name for p in (*run.surfaces, run.bold, run.sidecar))
    assert "sub-04_task-rest" not in runs  # no right hemisphere
    assert {r.run_id for r in find_runs(tmp_path, space=SPACE, task="rest", kind="surface",
                                        surface_space="fsaverage")} == {"sub-02_ses-1_task-rest_run-1"}


def test_a_run_at_two_surface_densities_is_an_error(tmp_path):
    _touch(tmp_path / "sub-01" / "func", *(f"sub-01_task-rest_hemi-{h}_space-fsaverage_den-{d}_bold.func.gii"
                                           for h in "LR" for d in ("10k", "41k")))
    with pytest.raises(InputError, match="several surface series"):
        find_runs(tmp_path, space=SPACE, task="rest", kind="surface", surface_space="fsaverage")
    assert len(find_runs(tmp_path, space=SPACE, task="rest", kind="surface", surface_space="fsaverage6")) == 1


def test_a_name_fmriprep_does_not_write_is_a_clear_error(tmp_path):
    _touch(tmp_path / "sub-01" / "func", f"sub-01_task-rest_foo-bar_space-{SPACE}_desc-preproc_bold.nii.gz")
    with pytest.raises(InputError, match="not a file name fMRIPrep writes.*foo-bar"):
        find_runs(tmp_path, space=SPACE, task="rest")


@pytest.mark.parametrize("kind, named, not_named", [
    ("volume", ["data.input: volume", f"space-{SPACE}", "desc-preproc_bold.nii.gz", "data.space"],
     ["fsaverage"]),
    ("surface", ["data.input: surface", "space-fsaverage5", "_hemi-L/R.func.gii", "fMRIPrep 20.2", "den-10k",
                 "data.surface_space"], [SPACE, "data.space"]),
    ("xcpd", ["data.input: xcpd", "seg-<seg>", "4S456Parcels", "data.xcpd_segmentations"], ["fsaverage"]),
])
def test_no_run_message_names_the_configured_input_kind(tmp_path, kind, named, not_named):
    _touch(tmp_path / "sub-01" / "func", "sub-01_task-rest_space-T1w_desc-preproc_bold.nii.gz",
           "sub-01_task-rest_hemi-L_space-fsnative_bold.func.gii")
    options = dict(space=SPACE, task="rest", kind=kind, segmentations=["4S456Parcels"])
    assert find_runs(tmp_path, **options) == []
    with pytest.raises(InputError) as error:
        find_runs(tmp_path, require=True, **options)
    message = str(error.value)
    assert message == no_runs_message(tmp_path, **options)
    for text in named:
        assert text in message, (text, message)
    for text in not_named:
        assert text not in message, (text, message)
    assert "space-T1w" in message and "space-fsnative" in message  # what the folder holds instead


# --- real files in the 20.2 layout give the same numbers ---------------------------------------

@pytest.fixture(scope="module")
def atlas_set(tiny_dataset):
    return load_atlas_set(demo_atlas_paths(tiny_dataset, 6))


@pytest.fixture(scope="module")
def source_run(tiny_dataset):
    """A clean first-session run with non-steady-state volumes and cosine regressors."""
    truth = pd.read_csv(tiny_dataset / "ground_truth" / "runs.tsv", sep="\t")
    bad = {Path(row["bold"]).name for _, row in truth.iterrows() if row["high_motion"] or row["short"]}
    runs = find_runs(tiny_dataset / "fmriprep", space=SPACE, task="rest")
    return next(run for run in runs if run.session == "1" and Path(run.bold).name not in bad
                and _leading_dummies(pd.read_csv(run.confounds, sep="\t")))


def _older_confounds(current: Path, target: Path) -> None:
    """The run's confounds in the naming of fMRIPrep 1.4-20.1 and of other writers: ``cosine_00``,
    ``non_steady_state_outlier_00``, ``motion_outlier_00``, CSF and WM aCompCor as ``a_comp_cor_NN``
    after the combined ones (mask in the JSON), and no ``csf_wm``/``tcompcor`` columns."""
    table = pd.read_csv(current, sep="\t", dtype=str, keep_default_na=False)
    description = json.loads(current.with_suffix(".json").read_text())
    n_combined = len([c for c in table.columns if c.startswith("a_comp_cor_")])
    renames, number = {}, n_combined
    for prefix in ("c_comp_cor", "w_comp_cor"):
        for column in [c for c in table.columns if c.startswith(prefix)]:
            renames[column] = f"a_comp_cor_{number:02d}"
            number += 1
    for column in table.columns:
        for stem in ("cosine", "non_steady_state_outlier", "motion_outlier"):
            if column.startswith(stem) and column[len(stem):].isdigit():
                renames[column] = f"{stem}_{column[len(stem):]}"
    table = table.drop(columns=["csf_wm", "tcompcor"]).rename(columns=renames)
    table.to_csv(target, sep="\t", index=False, lineterminator="\n")
    target.with_suffix(".json").write_text(json.dumps({renames.get(k, k): v for k, v in description.items()}))


def _as_20_2(run, folder: Path, *, confounds: str = "current") -> None:
    """Copy a run into the fMRIPrep 20.2 LTS layout: no res-, confounds under the older naming."""
    folder.mkdir(parents=True, exist_ok=True)
    for source in (run.bold, run.sidecar, run.bold.replace("_desc-preproc_bold", "_desc-brain_mask")):
        shutil.copy(source, folder / Path(source).name.replace("_res-6", ""))
    stem = f"{run.run_id}_desc-confounds_{'regressors' if confounds == 'older' else 'timeseries'}"
    if confounds == "older":
        _older_confounds(Path(run.confounds), folder / f"{stem}.tsv")
    else:
        shutil.copy(run.confounds, folder / f"{stem}.tsv")
        shutil.copy(run.confounds.replace(".tsv", ".json"), folder / f"{stem}.json")


@pytest.mark.parametrize("denoise", [{}, {"strategy": "compcor", "compcor": "anat_separated", "n_compcor": 2},
                                     {"strategy": "scrubbing"}])
def test_the_older_confounds_naming_gives_the_same_numbers(source_run, atlas_set, tmp_path, denoise):
    settings = _settings(**denoise)
    for naming in ("current", "older"):
        _as_20_2(source_run, tmp_path / naming / source_run.participant_id / "ses-1" / "func", confounds=naming)
    results = {}
    for naming in ("current", "older"):
        (run,) = find_runs(tmp_path / naming, space=SPACE, task="rest")
        assert run.run_id == source_run.run_id and "_res-" not in Path(run.bold).name
        results[naming] = preprocess_run(run, ParcellationCache(atlas_set, SPACE), settings)
    reference = preprocess_run(source_run, ParcellationCache(atlas_set, SPACE), settings)
    for result in results.values():
        assert result.qc["n_dummy"] == reference.qc["n_dummy"] > 0
        assert result.qc["fraction_scrubbed"] == reference.qc["fraction_scrubbed"]
        np.testing.assert_array_equal(result.timeseries, reference.timeseries)


def test_current_confounds_select_the_separate_csf_and_wm_components(source_run):
    """fMRIPrep 21+ names them c_comp_cor/w_comp_cor; nilearn alone finds no CSF or WM component."""
    n_volumes = len(pd.read_csv(source_run.confounds, sep="\t"))
    def select(compcor):
        denoise = dict(SETTINGS["denoise"], strategy="compcor", compcor=compcor, n_compcor=2)
        return _load_confounds(source_run, n_volumes, denoise)[1]

    selected, combined = select("anat_separated"), select("anat_combined")
    assert selected.shape[1] == combined.shape[1] + 2  # 2 CSF + 2 WM instead of 2 combined
    table = pd.read_csv(source_run.confounds, sep="\t", na_values=["n/a"])
    for column in ("c_comp_cor_00", "c_comp_cor_01", "w_comp_cor_00", "w_comp_cor_01"):
        values = table[column].to_numpy()
        assert any(np.allclose(values - values.mean(), selected[:, k]) for k in range(selected.shape[1])), column


def test_confounds_names_are_normalised_to_fmriprep_names():
    columns = ["trans_x", "csf_wm", "tcompcor", "cosine_00", "cosine01", "non_steady_state_outlier_00",
               "motion_outlier00", "a_comp_cor_00", "c_comp_cor_00", "w_comp_cor_00", "t_comp_cor_00"]
    description = {"a_comp_cor_00": {"Method": "aCompCor", "Mask": "combined"},
                   "c_comp_cor_00": {"Method": "aCompCor", "Mask": "CSF"}, "w_comp_cor_00": {"Method": "aCompCor"},
                   "t_comp_cor_00": {"Method": "tCompCor"}, "dropped_0": {"Retained": False}}
    renamed, described = normalise_confounds_names(columns, description)
    assert renamed == ["trans_x", "csf_wm", "tcompcor", "cosine00", "cosine01", "non_steady_state_outlier00",
                       "motion_outlier00", "a_comp_cor_00", "a_comp_cor_01", "a_comp_cor_02", "t_comp_cor_00"]
    assert described["a_comp_cor_01"]["Mask"] == "CSF" and described["a_comp_cor_02"]["Mask"] == "WM"
    assert "c_comp_cor_00" not in described and described["dropped_0"] == {"Retained": False}
    assert "c_comp_cor_00" in description  # the caller's sidecar is left alone
    assert normalise_confounds_names(["cosine00", "a_comp_cor_00"], None) == (["cosine00", "a_comp_cor_00"], None)
    with pytest.raises(InputError, match="CamelCase naming of fMRIPrep 1.0-1.1.*RotX"):
        normalise_confounds_names(["X", "RotX", "aCompCor00", "NonSteadyStateOutlier00"], None, source="c.tsv")
    with pytest.raises(InputError, match="two namings"):
        normalise_confounds_names(["cosine00", "cosine_00"], None)


def test_a_20_2_surface_run_gives_the_same_numbers_as_its_21_twin(tiny_dataset, source_run, atlas_set, tmp_path):
    """The same surface series named as fMRIPrep 20.2 (hemi after space, no _bold, no sidecar: the TR
    from the volume's) and as 21+ are processed alike, with the run's own volume and confounds."""
    image, data = load_bold(source_run.bold)
    voxels, weights = parcellation_weights(atlas_set, image, bold_space=SPACE)
    cortical = parcellate(data, voxels, weights)[:, :400]
    rng = np.random.default_rng(0)
    surface, series = {}, {}
    for side, hemi, offset in (("left", "L", 0), ("right", "R", 200)):
        labels = np.concatenate([np.zeros(42, int), np.repeat(np.arange(1, 201), 10)])  # 2,042 vertices
        rng.shuffle(labels)
        annot = tmp_path / f"{hemi.lower()}h.Schaefer400_7Networks.annot"
        colours = np.column_stack([rng.integers(0, 255, (201, 3)), np.zeros(201, int)])
        names = ["???"] + atlas_set.names["cortical"][offset:offset + 200]  # 0 is the medial wall
        nib.freesurfer.write_annot(str(annot), labels, colours, names, fill_ctab=True)
        surface[side] = str(annot)
        values = np.zeros((len(labels), len(cortical)), np.float32)
        inside = labels > 0
        values[inside] = cortical[:, offset + labels[inside] - 1].T + rng.normal(0, 5, (inside.sum(), len(cortical)))
        series[hemi] = nib.GiftiImage(darrays=[nib.gifti.GiftiDataArray(values[:, t], intent="NIFTI_INTENT_TIME_SERIES",
                                                                        datatype="NIFTI_TYPE_FLOAT32")
                                               for t in range(values.shape[1])])
    results = {}
    for layout in ("20.2", "21"):
        func = tmp_path / layout / source_run.participant_id / "ses-1" / "func"
        _as_20_2(source_run, func)
        for hemi, image_ in series.items():
            name = (f"{source_run.run_id}_space-fsaverage5_hemi-{hemi}.func.gii" if layout == "20.2"
                    else f"{source_run.run_id}_hemi-{hemi}_space-fsaverage5_bold.func.gii")
            nib.save(image_, func / name)
        (run,) = find_runs(tmp_path / layout, space=SPACE, task="rest", kind="surface")
        assert run.bold is not None and Path(run.confounds).parent == func
        surface_atlases = load_atlas_set(demo_atlas_paths(tiny_dataset, 6), surface)
        results[layout] = preprocess_run(run, ParcellationCache(surface_atlases, SPACE), SETTINGS)
    tr = json.loads(Path(source_run.sidecar).read_text())["RepetitionTime"]
    assert results["20.2"].qc["source_tr"] == results["21"].qc["source_tr"] == tr
    assert results["20.2"].qc["included"], results["20.2"].qc["reason"]
    np.testing.assert_array_equal(results["20.2"].timeseries, results["21"].timeseries)
    assert not results["20.2"].channel_missing.any()

