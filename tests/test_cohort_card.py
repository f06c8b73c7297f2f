"""The cohort card (simulator card) and the simulator's individual signature."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import yaml

from brainscale.config import ConfigError, validate_config
from brainscale.models.config import REFERENCE_CHANNELS, reference_network_map
from brainscale.simulate import card
from brainscale.simulate.cohort import POPULATION_AGE, dynamics_traits, simulate_participants
from brainscale.simulate.dataset import planted_parcel_signals
from brainscale.simulate.dynamics import Individuality, spatial_smoothing
from brainscale.probing.baselines import fisher_z_connectivity

from .conftest import MINIMAL_CONFIG


def edges_with_icc(icc: float, n_subjects=300, n_edges=200, seed=0):
    """Two runs of FC per subject: a subject value of variance icc plus run noise of variance 1 - icc."""
    rng = np.random.default_rng(seed)
    truth = np.sqrt(icc) * rng.normal(size=(n_subjects, n_edges))
    runs = [truth + np.sqrt(1 - icc) * rng.normal(size=truth.shape) for _ in range(2)]
    fc = np.stack(runs, axis=1).reshape(2 * n_subjects, n_edges)
    return fc, np.repeat([f"sub-{i:03d}" for i in range(n_subjects)], 2)


@pytest.mark.parametrize("icc", [0.1, 0.3, 0.6])
def test_edge_icc_recovers_the_planted_reliability(icc):
    fc, subjects = edges_with_icc(icc)
    measured = card.edge_icc(fc, subjects)
    assert measured["n_subjects"] == 300
    assert abs(measured["mean"] - icc) < 0.03


def test_identification_needs_a_stable_signature():
    fc, subjects = edges_with_icc(0.3, n_subjects=40, n_edges=2000)
    assert card.identification(fc, subjects)["accuracy"] > 0.95
    noise, subjects = edges_with_icc(0.0, n_subjects=40, n_edges=2000)
    assert card.identification(noise, subjects)["accuracy"] < 0.2
    # One-run subjects join the pool as candidates only.
    extra = np.random.default_rng(1).normal(size=(30, 2000))
    pooled_fc = np.concatenate([fc, extra])
    pooled_subjects = np.concatenate([subjects, [f"single-{i}" for i in range(30)]])
    pooled = card.pooled_identification(pooled_fc, pooled_subjects, "centred")
    assert pooled["n_queries"] == 80 and pooled["n_candidates"] == 109 and pooled["accuracy"] > 0.9
    with pytest.raises(ValueError, match="raw, centred or zscore"):
        card.pooled_identification(fc, subjects, "whitened")


def test_group_mean_share_and_similarity():
    rng = np.random.default_rng(0)
    group = rng.normal(size=500)
    identical = np.tile(group, (6, 1))
    assert card.group_mean_share(identical)["variance_share"] == pytest.approx(1.0)
    fc = group + rng.normal(size=(6, 500))  # the group explains half of each row's variance
    assert 0.35 < card.group_mean_share(fc)["variance_share"] < 0.65
    fc, subjects = edges_with_icc(0.5, n_subjects=20, n_edges=3000)
    similarity = card.fc_similarity(fc, subjects)
    assert similarity["same"] == pytest.approx(0.5, abs=0.05) and abs(similarity["different"]) < 0.05


def test_phenotypes_from_fc_follow_a_planted_signal_and_not_noise():
    rng = np.random.default_rng(0)
    fc = rng.normal(size=(150, 40))
    age = 45 + 15 * fc[:, :10].mean(axis=1) * np.sqrt(10)
    assert card.phenotype_from_fc(fc, age, kind="regression", seed=0, n_repeats=1)["r"] > 0.8
    sex = np.where(rng.normal(size=150) > 0, "F", "M")
    chance = card.phenotype_from_fc(fc, sex, kind="classification", seed=0, n_repeats=1)
    assert 0.3 < chance["balanced_accuracy"] < 0.7


def test_the_card_is_written_from_cleaned_runs(preprocessed, tmp_path):
    files, phenotypes, _ = preprocessed
    phenotypes_tsv = tmp_path / "phenotypes.tsv"
    phenotypes.to_csv(phenotypes_tsv, sep="\t", na_rep="n/a")
    table = card.write_cohort_card(files, phenotypes_tsv, tmp_path / "card.tsv", tmp_path / "card.md", seed=0,
                                   log=lambda line: None)
    written = pd.read_csv(tmp_path / "card.tsv", sep="\t")
    assert list(written["statistic"]) == list(table["statistic"])
    assert written["statistic"].str.contains("Finn-style").any()
    assert set(written["verdict"]) <= {"within", "below", "above", "context", "not measured"}
    icc = written.loc[written["statistic"].str.contains("ICC"), ["measured", "verdict"]].iloc[0]
    assert np.isnan(icc["measured"]) == (icc["verdict"] == "not measured")
    # Nine subjects are too few to predict sex or age: the rows say so instead of a number.
    assert written.loc[written["statistic"].str.startswith("sex from FC"), "measured"].isna().all()
    markdown = (tmp_path / "card.md").read_text()
    assert markdown.startswith("| statistic | measured |") and "Noble" in markdown
    with pytest.raises(ValueError, match="no cleaned runs"):
        card.load_connectomes([])
    # Every run excluded: a card that says so, not a crash (rule build_shards reports the reasons).
    empty = card.write_cohort_card([], phenotypes_tsv, tmp_path / "empty.tsv", tmp_path / "empty.md", seed=0,
                                   log=lambda line: None)
    assert list(empty["verdict"]) == ["not measured"] and "results/qc/runs.tsv" in empty["measured_on"].iloc[0]


def planted_fc(individuality, n_subjects=16, seed=3):
    network_of_parcel = np.array(reference_network_map())
    centroids = np.random.default_rng(0).uniform(-70, 70, size=(REFERENCE_CHANNELS, 3))
    smoothing = spatial_smoothing(centroids, individuality.smoothness_mm)
    latents = np.random.default_rng(1).normal(size=(n_subjects, 4))
    rows, subjects = [], []
    for subject in range(n_subjects):
        for visit in range(2):
            parcels = planted_parcel_signals(seed, subject, visit, latents[subject], 200, 2.0, 0.12,
                                             network_of_parcel, individuality, smoothing)
            rows.append(fisher_z_connectivity(parcels.T))
            subjects.append(subject)
    return np.stack(rows), np.array(subjects)


def test_the_individual_signature_persists_across_runs_and_differs_between_subjects():
    signature = Individuality(modes=5, share=0.6, smoothness_mm=35, state_share=0.25, spectrum_sd=0.15)
    fc, subjects = planted_fc(signature)
    with_signature = card.edge_icc(fc, subjects)["mean"]
    assert card.identification(fc, subjects)["accuracy"] == 1.0
    fc, subjects = planted_fc(Individuality())
    without = card.edge_icc(fc, subjects)["mean"]
    assert with_signature > without + 0.1
    # Every run drawn anew: nothing persists beyond the traits and loadings.
    fc, subjects = planted_fc(Individuality(modes=5, share=0.6, smoothness_mm=35, state_share=1.0))
    assert card.edge_icc(fc, subjects)["mean"] < with_signature - 0.1


def test_the_dynamics_see_age_on_one_scale_for_every_site():
    sites = [{"name": "young", "age_mean": 30, "age_sd": 8}, {"name": "old", "age_mean": 62, "age_sd": 9}]
    participants, latents = simulate_participants(40, sites, seed=0, missing_score_fraction=0.0)
    traits = dynamics_traits(latents, participants, sites)
    age = 1  # LATENTS order: sex, age, cognition, nuisance
    old = (participants["site"] == "old").to_numpy()
    expected = (62 + 9 * latents[old, age] - POPULATION_AGE["mean"]) / POPULATION_AGE["sd"]
    assert np.allclose(traits[old, age], expected)
    assert np.array_equal(np.delete(traits, age, axis=1), np.delete(latents, age, axis=1))
    assert np.corrcoef(traits[:, age], participants["age"])[0, 1] > 0.9


def test_impossible_signatures_are_named_before_anything_is_written(tiny_dataset):
    raw = yaml.safe_load(MINIMAL_CONFIG.read_text())
    for settings, message in (({"modes": REFERENCE_CHANNELS + 1}, r"simulate\.individuality\.modes'.*more than the 457"),
                              ({"state_share": 1.0}, r"simulate\.individuality\.state_share'.*no signature persists"),
                              ({"share": -0.2}, r"simulate\.individuality\.share")):
        raw["simulate"]["individuality"] = settings
        with pytest.raises(ConfigError, match=message):
            validate_config(raw)
    # The constant the check uses is the simulated atlases' parcel count.
    tables = sorted((tiny_dataset / "atlases").glob("*.tsv"))
    assert sum(len(pd.read_csv(table, sep="\t")) for table in tables) == REFERENCE_CHANNELS
