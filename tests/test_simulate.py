"""The synthetic fMRIPrep derivatives: layout, determinism, nilearn compatibility, ground truth."""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
from threadpoolctl import threadpool_limits

from brainscale.bids import parse_bids_name
from brainscale.simulate import dataset as dataset_module
from brainscale.simulate import simulate_dataset
from brainscale.simulate.atlas import NETWORK_PARCELS_PER_HEMISPHERE

from .conftest import minimal_settings

SCHAEFER_7N_SIZES = [61, 77, 46, 47, 26, 52, 91]
SCHAEFER_NAME = re.compile(r"^7Networks_(LH|RH)_(Vis|SomMot|DorsAttn|SalVentAttn|Limbic|Cont|Default)(_[A-Za-z]+)?_\d+$")


def bold_files(root: Path) -> list[Path]:
    return sorted((root / "fmriprep").glob("sub-*/**/func/*_desc-preproc_bold.nii.gz"))


def confounds_of(bold: Path) -> Path:
    stem = re.sub(r"_space-[^_]+_res-[^_]+_desc-preproc_bold\.nii\.gz$", "", bold.name)
    return bold.with_name(f"{stem}_desc-confounds_timeseries.tsv")


def tree_digest(root: Path) -> dict:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def test_layout_is_fmriprep_like(tiny_dataset):
    fmriprep = tiny_dataset / "fmriprep"
    description = json.loads((fmriprep / "dataset_description.json").read_text())
    assert description["DatasetType"] == "derivative"
    assert description["GeneratedBy"][0]["Name"]
    participants = pd.read_csv(fmriprep / "participants.tsv", sep="\t")
    assert list(participants.columns[:4]) == ["participant_id", "age", "sex", "site"]
    assert "fluid_intelligence" in participants.columns
    assert set(participants["sex"]) <= {"F", "M"}
    runs = bold_files(tiny_dataset)
    assert len(runs) == len(pd.read_csv(tiny_dataset / "ground_truth" / "runs.tsv", sep="\t"))
    for bold in runs:
        for companion in (bold.with_name(bold.name.replace(".nii.gz", ".json")),
                          bold.with_name(bold.name.replace("desc-preproc_bold", "desc-brain_mask")),
                          confounds_of(bold), confounds_of(bold).with_suffix(".json")):
            assert companion.is_file(), companion
    # The repeated-visit flavours are all present: sessions, runs and neither.
    names = " ".join(p.name for p in runs)
    assert "_ses-2_" in names and "_run-2_" in names
    assert any("_ses-" not in p.name and "_run-" not in p.name for p in runs)


def test_every_file_name_parses_as_bids(tiny_dataset):
    fmriprep = tiny_dataset / "fmriprep"
    files = [p for p in fmriprep.rglob("sub-*") if p.is_file()]
    assert files
    for path in files:
        parsed = parse_bids_name(path)
        entities = parsed["entities"]
        assert entities["task"] == "rest"
        assert path.parts[len(fmriprep.parts)] == f"sub-{entities['sub']}"
        if "ses" in entities:
            assert f"ses-{entities['ses']}" in path.parts
        assert parsed["suffix"] in {"bold", "mask", "timeseries", "parcels"}
        if parsed["suffix"] in {"bold", "mask"}:
            assert entities["space"] == "MNI152NLin2009cAsym" and entities["res"] == "6"


def test_images_match_sidecars_and_atlas_grid(tiny_dataset):
    atlas = nib.load(next((tiny_dataset / "atlases").glob("*Schaefer2018*.nii.gz")))
    runs = pd.read_csv(tiny_dataset / "ground_truth" / "runs.tsv", sep="\t")
    for bold in bold_files(tiny_dataset):
        image = nib.load(bold)
        sidecar = json.loads(bold.with_name(bold.name.replace(".nii.gz", ".json")).read_text())
        assert image.ndim == 4
        assert np.allclose(image.affine, atlas.affine) and image.shape[:3] == atlas.shape
        assert image.header.get_zooms()[3] == pytest.approx(sidecar["RepetitionTime"])
        row = runs[runs["bold"] == str(bold.relative_to(tiny_dataset / "fmriprep"))].iloc[0]
        assert image.shape[3] == row["n_volumes"]
        assert sidecar["RepetitionTime"] == row["repetition_time"]
        confounds = pd.read_csv(confounds_of(bold), sep="\t")
        assert len(confounds) == image.shape[3]
    assert sorted(runs["repetition_time"].unique()) == [0.8, 1.5, 2.0]


def test_confounds_have_the_fmriprep_columns(tiny_dataset):
    for bold in bold_files(tiny_dataset):
        table = pd.read_csv(confounds_of(bold), sep="\t")
        columns = set(table.columns)
        for name in ("trans_x", "rot_z"):
            assert {name, f"{name}_derivative1", f"{name}_power2", f"{name}_derivative1_power2"} <= columns
        for name in ("framewise_displacement", "std_dvars", "dvars", "rmsd", "csf", "white_matter",
                     "global_signal", "csf_wm", "tcompcor", "t_comp_cor_00", "a_comp_cor_00", "c_comp_cor_00",
                     "w_comp_cor_00"):
            assert name in columns
        # fMRIPrep's 128 s discrete cosine basis, without the constant term.
        tr = json.loads(bold.with_name(bold.name.replace(".nii.gz", ".json")).read_text())["RepetitionTime"]
        n_cosines = max(int(2 * len(table) * tr / 128) - 1, 0)
        assert len(table.filter(regex=r"^cosine\d{2}$").columns) == n_cosines  # fMRIPrep's cosine00, no underscore
        assert not [c for c in table.columns if c.endswith(("_00", "_01")) and "comp_cor" not in c]
        assert np.isnan(table["framewise_displacement"].iloc[0])
        assert np.isnan(table["trans_x_derivative1"].iloc[0])
        assert table["framewise_displacement"].iloc[1:].notna().all()
        description = json.loads(confounds_of(bold).with_suffix(".json").read_text())
        assert description["a_comp_cor_00"]["Mask"] == "combined"
        assert description["c_comp_cor_00"]["Mask"] == "CSF" and description["w_comp_cor_00"]["Mask"] == "WM"
        # Motion outliers are exactly the volumes over the fMRIPrep thresholds.
        flagged = table.filter(like="motion_outlier").sum(axis=1).to_numpy() > 0
        over = (table["framewise_displacement"].fillna(0) > 0.5) | (table["std_dvars"].fillna(0) > 1.5)
        assert np.array_equal(flagged, over.to_numpy())


def test_nilearn_load_confounds_strategy_accepts_every_run(tiny_dataset):
    from nilearn.interfaces.fmriprep import load_confounds_strategy

    for bold in bold_files(tiny_dataset):
        n_volumes = nib.load(bold).shape[3]
        dummies = len(pd.read_csv(confounds_of(bold), sep="\t").filter(like="non_steady_state").columns)
        for strategy in ("simple", "scrubbing", "compcor"):
            confounds, sample_mask = load_confounds_strategy(str(bold), denoise_strategy=strategy)
            assert len(confounds) == n_volumes
            assert not confounds.isna().any().any()
            if dummies:
                assert sample_mask is not None and sample_mask.min() >= dummies
            if strategy == "simple" and dummies:
                assert list(sample_mask) == list(range(dummies, n_volumes))


def test_atlases_carry_reference_names_counts_and_order(tiny_dataset):
    folder = tiny_dataset / "atlases"
    expected = {"Schaefer2018": 400, "Tian": 50, "Buckner2011": 7}
    for atlas, count in expected.items():
        image = next(folder.glob(f"*atlas-{atlas}_*.nii.gz"))
        table = pd.read_csv(next(folder.glob(f"*atlas-{atlas}_*.tsv")), sep="\t")
        assert list(table.columns) == ["index", "name", "color"]
        assert list(table["index"]) == list(range(1, count + 1))
        present = np.unique(np.asarray(nib.load(image).dataobj))
        assert list(present) == list(range(count + 1))  # every label has voxels
    names = pd.read_csv(next(folder.glob("*Schaefer2018*.tsv")), sep="\t")["name"]
    assert names.str.match(SCHAEFER_NAME).all()
    hemisphere = names.str.split("_").str[1]
    network = names.str.split("_").str[2]
    assert list(hemisphere[:200].unique()) == ["LH"] and list(hemisphere[200:].unique()) == ["RH"]
    order = ["Vis", "SomMot", "DorsAttn", "SalVentAttn", "Limbic", "Cont", "Default"]
    assert [int((network == net).sum()) for net in order] == SCHAEFER_7N_SIZES
    for half, offset in (("LH", 0), ("RH", 200)):
        ranks = [order.index(n) for n in network[offset:offset + 200]]
        assert ranks == sorted(ranks)  # network order never decreases within a hemisphere
        column = 0 if half == "LH" else 1
        assert [ranks.count(i) for i in range(7)] == [NETWORK_PARCELS_PER_HEMISPHERE[n][column] for n in order]
    # Parcels sit in their hemisphere.
    image = nib.load(next(folder.glob("*Schaefer2018*.nii.gz")))
    labels = np.asarray(image.dataobj)
    for label in (1, 150, 201, 399):
        x = (np.argwhere(labels == label) @ image.affine[:3, :3].T + image.affine[:3, 3])[:, 0]
        assert (x <= 0).all() if label <= 200 else (x > 0).all()


def test_bad_runs_are_planted(tiny_dataset):
    runs = pd.read_csv(tiny_dataset / "ground_truth" / "runs.tsv", sep="\t")
    assert runs["high_motion"].any() and runs["short"].any()
    fd = {}
    for bold in bold_files(tiny_dataset):
        key = str(bold.relative_to(tiny_dataset / "fmriprep"))
        fd[key] = pd.read_csv(confounds_of(bold), sep="\t")["framewise_displacement"].mean()
    runs["fd_from_confounds"] = runs["bold"].map(fd)
    assert runs.loc[runs["high_motion"], "fd_from_confounds"].min() > 2 * runs.loc[
        ~runs["high_motion"], "fd_from_confounds"].max()
    short = runs[runs["short"]]
    assert ((short["n_volumes"] - short["dummy_scans"]) * short["repetition_time"] / 2.0 < 100).all()


def test_ground_truth_is_written(tiny_dataset):
    truth = tiny_dataset / "ground_truth"
    latents = pd.read_csv(truth / "latents.tsv", sep="\t")
    participants = pd.read_csv(tiny_dataset / "fmriprep" / "participants.tsv", sep="\t")
    assert list(latents["participant_id"]) == list(participants["participant_id"])
    assert {"latent_sex", "latent_age", "latent_cognition"} <= set(latents.columns)
    model = json.loads((truth / "phenotype_model.json").read_text())
    assert set(model["phenotypes"]) == {"sex", "age", "fluid_intelligence"}
    assert model["coupling_effects"]["sex"]
    dynamics = np.load(truth / "subject_dynamics.npz")
    assert dynamics["coupling"].shape == (len(participants), 9, 9)
    # Sex follows its latent up to the documented noise.
    agree = (latents["latent_sex"] > 0) == (participants["sex"] == "F")
    assert agree.mean() >= 0.5


def test_same_seed_gives_same_bytes_whatever_the_worker_count(tmp_path):
    settings = minimal_settings(n_subjects=6, save_parcel_signals=False)
    simulate_dataset(settings, tmp_path / "one", n_jobs=1, log=lambda line: None)
    simulate_dataset(settings, tmp_path / "two", n_jobs=2, log=lambda line: None)
    first, second = tree_digest(tmp_path / "one"), tree_digest(tmp_path / "two")
    assert first == second and len(first) > 20
    simulate_dataset(dict(settings, seed=settings["seed"] + 1), tmp_path / "other", n_jobs=2, log=lambda line: None)
    other = tree_digest(tmp_path / "other")
    shared = [name for name in first if name.endswith("desc-preproc_bold.nii.gz") and name in other]
    assert shared and all(other[name] != first[name] for name in shared)


def test_same_seed_gives_same_bytes_whatever_the_thread_count(tmp_path):
    # The Snakemake job runs with as many BLAS/OpenMP threads as it has cores; k-means (the atlas)
    # and the eigendecomposition (spatial smoothing) round differently with more threads.
    settings = minimal_settings(n_subjects=6, save_parcel_signals=False)
    for threads in (1, 2):
        with threadpool_limits(limits=threads):
            simulate_dataset(settings, tmp_path / f"threads-{threads}", n_jobs=1, log=lambda line: None)
    assert tree_digest(tmp_path / "threads-1") == tree_digest(tmp_path / "threads-2")


def test_a_killed_run_leaves_nothing_and_reruns_cleanly(tmp_path, monkeypatch):
    settings = minimal_settings(n_subjects=6, save_parcel_signals=False)
    target = tmp_path / "dataset"
    real_run = dataset_module._simulate_run
    calls = []

    def dies_on_third_run(task):
        calls.append(task)
        if len(calls) == 3:
            raise KeyboardInterrupt("killed")
        return real_run(task)

    monkeypatch.setattr(dataset_module, "_simulate_run", dies_on_third_run)
    with pytest.raises(KeyboardInterrupt):
        simulate_dataset(settings, target, n_jobs=1, log=lambda line: None)
    assert not target.exists()
    assert list(tmp_path.iterdir()) == []  # no partial folder either
    monkeypatch.setattr(dataset_module, "_simulate_run", real_run)
    simulate_dataset(settings, target, n_jobs=1, log=lambda line: None)
    assert len(bold_files(target)) > 0
    with pytest.raises(FileExistsError, match="already exists"):
        simulate_dataset(settings, target, n_jobs=1, log=lambda line: None)


def test_a_stale_partial_folder_from_a_killed_process_is_cleared(tmp_path):
    stale = tmp_path / ".dataset.partial-999999"
    (stale / "fmriprep").mkdir(parents=True)
    simulate_dataset(minimal_settings(n_subjects=6, save_parcel_signals=False), tmp_path / "dataset", n_jobs=1,
                     log=lambda line: None)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dataset"]
