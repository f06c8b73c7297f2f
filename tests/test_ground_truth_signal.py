"""The planted phenotype signal is recoverable, so the demo is worth benchmarking on."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.linear_model import LogisticRegression, Ridge
from sklearn.model_selection import StratifiedKFold, KFold, cross_val_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from brainscale.simulate.cohort import simulate_participants
from brainscale.simulate.dataset import planted_parcel_signals


NETWORK_SIZES = [61, 77, 46, 47, 26, 52, 91, 50, 7]


def network_fc_features(parcels: np.ndarray, network_of_parcel: np.ndarray) -> np.ndarray:
    """Fisher-z correlations between network-mean signals (36 values)."""
    means = np.stack([parcels[:, network_of_parcel == k].mean(axis=1) for k in range(9)], axis=1)
    upper = np.triu_indices(9, k=1)
    return np.arctanh(np.corrcoef(means.T)[upper])


@pytest.fixture(scope="module")
def cohort_features():
    sites = [{"name": "siteA", "age_mean": 45, "age_sd": 14}]
    participants, latents = simulate_participants(160, sites, seed=3, missing_score_fraction=0.0)
    network_of_parcel = np.repeat(np.arange(9), NETWORK_SIZES)
    rng = np.random.default_rng(0)
    features = []
    for index in range(len(participants)):
        parcels = planted_parcel_signals(3, index, 0, latents[index], 240, 2.0, 0.12, network_of_parcel)
        parcels = parcels + 0.5 * rng.standard_normal(parcels.shape)  # residual noise after denoising
        features.append(network_fc_features(parcels, network_of_parcel))
    return participants, np.array(features)


def test_sex_is_predictable_from_functional_connectivity(cohort_features):
    participants, features = cohort_features
    sex = (participants["sex"] == "F").to_numpy()
    model = make_pipeline(StandardScaler(), LogisticRegression(C=0.1, max_iter=2000))
    folds = StratifiedKFold(n_splits=5, shuffle=True, random_state=0)
    score = cross_val_score(model, features, sex, cv=folds, scoring="balanced_accuracy").mean()
    assert score > 0.7, f"balanced accuracy {score:.2f}: the planted sex signal is too weak"


def test_fluid_intelligence_is_predictable_from_functional_connectivity(cohort_features):
    participants, features = cohort_features
    model = make_pipeline(StandardScaler(), Ridge(alpha=10.0))
    folds = KFold(n_splits=5, shuffle=True, random_state=0)
    r2 = cross_val_score(model, features, participants["fluid_intelligence"], cv=folds, scoring="r2").mean()
    assert r2 > 0.2, f"R2 {r2:.2f}: the planted cognition signal is too weak"


def test_shuffled_labels_stay_at_chance(cohort_features):
    participants, features = cohort_features
    shuffled = np.random.default_rng(1).permutation((participants["sex"] == "F").to_numpy())
    model = make_pipeline(StandardScaler(), LogisticRegression(C=0.1, max_iter=2000))
    folds = StratifiedKFold(n_splits=5, shuffle=True, random_state=0)
    score = cross_val_score(model, features, shuffled, cv=folds, scoring="balanced_accuracy").mean()
    assert score < 0.65


def test_denoised_parcel_means_follow_the_planted_signal(tiny_dataset):
    """Parcel means of the written BOLD track the noise-free truth once the planted
    physiological and global nuisance is regressed out with the WM/CSF confounds."""
    import nibabel as nib
    from nilearn import signal
    from nilearn.interfaces.fmriprep import load_confounds
    from nilearn.maskers import NiftiLabelsMasker

    atlas = next((tiny_dataset / "atlases").glob("*Schaefer2018*.nii.gz"))
    runs = pd.read_csv(tiny_dataset / "ground_truth" / "runs.tsv", sep="\t")
    usable = runs[~runs["high_motion"] & ~runs["short"]]["bold"]
    assert len(usable) >= 3
    for relative in usable:
        bold = tiny_dataset / "fmriprep" / relative
        truth = np.load(next(bold.parent.glob(bold.name.split("_space-")[0] + "_desc-groundtruth_parcels.npy")))
        truth = truth[:, :400]  # the cortical parcels come first
        tr = float(nib.load(bold).header.get_zooms()[3])
        parcels = NiftiLabelsMasker(atlas).fit_transform(str(bold))

        def agreement(strategy):
            confounds, sample_mask = load_confounds(str(bold), strategy=strategy, wm_csf="basic")
            kept = sample_mask if sample_mask is not None else np.arange(len(truth))
            cleaned = signal.clean(parcels[kept], confounds=confounds.to_numpy()[kept], low_pass=0.1,
                                   high_pass=0.01, t_r=tr, standardize="zscore_sample")
            expected = signal.clean(truth[kept], low_pass=0.1, high_pass=0.01, t_r=tr, standardize="zscore_sample")
            return np.mean([np.corrcoef(cleaned[:, i], expected[:, i])[0, 1] for i in range(400)])

        filtered_only = agreement(("high_pass",))
        denoised = agreement(("high_pass", "wm_csf"))
        assert denoised > 0.75, f"{relative}: denoised parcels correlate {denoised:.2f} with the truth"
        # 0.05: the individual modes (simulate.individuality) make the planted signal louder against
        # the nuisance, so the filtered-only agreement starts higher (0.77 -> 0.87 on sub-0008).
        assert denoised > filtered_only + 0.05, (
            f"{relative}: WM/CSF regression did not help ({filtered_only:.2f} -> {denoised:.2f})")
