"""subject_reid: cross-run re-identification, and the probe rule's latent tasks."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from brainscale.config import validate_config
from brainscale.probing.embeddings import FeatureTable, write_features
from brainscale.probing.probes import ProbeError, run_probe_rule
from brainscale.probing.reid import fingerprint_summary, reidentification
from brainscale.shards.reader import shard_paths, subjects_from_shards

PROBE = validate_config({})["probe"]
LABELS = validate_config({})["shards"]["labels"]


def crops(n_subjects=20, runs=2, n_crops=8, subject_signal=1.0, run_signal=3.0, dim=64, seed=0):
    """Crop rows: a subject signature, a stronger run signature (shared by the run's crops), crop noise."""
    rng = np.random.default_rng(seed)
    signature = rng.normal(size=(n_subjects, dim))
    subjects, rows = [], []
    for subject in range(n_subjects):
        for _ in range(runs if subject % 2 == 0 else 1):  # half of the subjects have a single run
            offset = rng.normal(size=dim)
            for _ in range(n_crops):
                rows.append(subject_signal * signature[subject] + run_signal * offset + 0.3 * rng.normal(size=dim))
                subjects.append(f"sub-{subject:02d}")
    return np.array(rows), np.array(subjects), np.repeat(np.arange(len(rows) // n_crops), n_crops)


def test_reid_finds_the_subject_in_its_other_run_never_in_its_own():
    features, subjects, runs = crops(subject_signal=2.0, run_signal=1.0)
    result = reidentification(features, subjects, runs)
    assert result["n_subjects"] == 10 and result["n_queries"] == 10 * 2 * 8
    assert result["top1"] > 0.9
    # Runs only, no person: the crops of a run are each other's nearest neighbours, which is forbidden,
    # so identification falls to chance (a query's own candidates are 8 of 231 crops).
    features, subjects, runs = crops(subject_signal=0.0, run_signal=3.0)
    assert reidentification(features, subjects, runs)["top1"] < 0.15
    # One run per subject (runs = subjects): nothing to score.
    no_second_run = reidentification(features, subjects, subjects)
    assert np.isnan(no_second_run["top1"]) and no_second_run["n_queries"] == 0


def test_reid_removes_the_group_mean_and_keeps_each_dimension_spread():
    features, subjects, runs = crops(subject_signal=1.0, run_signal=1.0, seed=1)
    rng = np.random.default_rng(2)
    offset = features + 30 * rng.normal(size=features.shape[1])  # a large mean shared by every row
    assert np.allclose(reidentification(offset, subjects, runs)["top1"], reidentification(features, subjects, runs)["top1"])
    # Many quiet dimensions of pure noise (as FC edges that carry only sampling noise): a z-score
    # scales them up to the informative ones' spread, centring leaves them quiet.
    quiet = np.concatenate([features, 0.2 * rng.normal(size=(len(features), 1000))], axis=1)
    centred = reidentification(quiet, subjects, runs)["top1"]
    assert centred > 0.8
    assert reidentification(quiet, subjects, runs, normalisation="zscore")["top1"] < centred - 0.3
    line = fingerprint_summary(features, subjects, runs)
    assert "Finn" in line and "160 queries of 10 subjects" in line
    with pytest.raises(ValueError, match="one subject and one run per row"):
        reidentification(features, subjects[:-1], runs)
    with pytest.raises(ValueError, match="normalisation must be one of"):
        reidentification(features, subjects, runs, normalisation="whitened")


def test_the_probe_rule_scores_reid_and_the_latent_traits(shards, tmp_path):
    labels = subjects_from_shards(shard_paths(shards))
    subjects = labels.index.to_numpy()
    rng = np.random.default_rng(0)
    latent = pd.DataFrame({"participant_id": subjects, "latent_sex": rng.normal(size=len(subjects)),
                           "latent_age": rng.normal(size=len(subjects))})
    latents = tmp_path / "latents.tsv"
    latent.to_csv(latents, sep="\t", index=False)
    rows = np.repeat(np.arange(len(subjects)), 6)
    run_ids = np.repeat(np.arange(len(subjects) * 2), 3)  # two runs of three crops per subject
    features = rng.normal(size=(len(rows), 16))
    features[:, 0] += 3 * latent["latent_age"].to_numpy()[rows]  # age latent planted in dimension 0
    features[:, 1:9] += 2 * rng.normal(size=(len(subjects), 8))[rows]  # a subject fingerprint
    table = FeatureTable(subjects[rows], {"cls": features[:, None], "mean": features[:, None]},
                         {"run_id": run_ids}, attrs={"source": "encoder"})
    write_features(tmp_path / "features.h5", table)
    settings = dict(PROBE, tasks={"age": {"label": "age"}}, split_seeds=[0, 1], layers="last")
    proportions = [1, 1, 1]
    lines = []
    metrics = run_probe_rule(tmp_path / "features.h5", shards, settings, LABELS, proportions,
                             tmp_path / "metrics.tsv", tmp_path / "predictions.tsv.gz", latents=latents,
                             log=lines.append)
    assert set(metrics["task"]) == {"age", "latent_sex", "latent_age", "subject_reid"}
    reid = metrics[metrics["task"] == "subject_reid"]
    assert (reid["kind"] == "identification").all() and (reid["top1"] > 0.6).all()
    assert any("subject_reid" in line for line in lines)
    assert (metrics.loc[metrics["task"] == "latent_age", "r2"].mean() >
            metrics.loc[metrics["task"] == "latent_sex", "r2"].mean() + 0.3)
    # The oracle's features are the latents: no latent task for it, and no run identity: reid is NaN.
    oracle = FeatureTable(subjects, {"ground_truth": latent[["latent_sex", "latent_age"]].to_numpy()[:, None]},
                          attrs={"source": "oracle"})
    write_features(tmp_path / "oracle.h5", oracle)
    metrics = run_probe_rule(tmp_path / "oracle.h5", shards, settings, LABELS, proportions, tmp_path / "o.tsv",
                             tmp_path / "o.tsv.gz", latents=latents)
    assert set(metrics["task"]) == {"age", "subject_reid"}
    assert metrics.loc[metrics["task"] == "subject_reid", "top1"].isna().all()
    # Clear errors: a latents table of another dataset, an old one-row-per-subject connectivity file.
    latent.iloc[1:].to_csv(latents, sep="\t", index=False)
    with pytest.raises(ProbeError, match="latents.tsv: no latent traits for 1 probe subjects"):
        run_probe_rule(tmp_path / "features.h5", shards, settings, LABELS, proportions, tmp_path / "m.tsv",
                       tmp_path / "p.tsv.gz", latents=latents)
    with pytest.raises(ProbeError, match="absent.tsv: no such file.*probe.latents: false"):
        run_probe_rule(tmp_path / "features.h5", shards, settings, LABELS, proportions, tmp_path / "m.tsv",
                       tmp_path / "p.tsv.gz", latents=tmp_path / "absent.tsv")
    old = FeatureTable(subjects, {"fc": rng.normal(size=(len(subjects), 1, 8))}, attrs={"source": "connectivity"})
    write_features(tmp_path / "old_fc.h5", old)
    with pytest.raises(ProbeError, match="old_fc.h5: connectivity features without run_id.*connectivity_features"):
        run_probe_rule(tmp_path / "old_fc.h5", shards, settings, LABELS, proportions, tmp_path / "m.tsv",
                       tmp_path / "p.tsv.gz")
