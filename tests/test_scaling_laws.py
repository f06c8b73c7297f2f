"""Scaling-law fits with bootstrap CIs over seeds, the seed-aware table CIs, and a stable strength choice."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from brainscale.probing.probes import probe_one, split_probe_subjects
from brainscale.probing.scaling import _summary
from brainscale.scaling_laws import ALPHA_RANGE, bootstrap_fit, fit_saturating_power_law, scaling_law_table

SIZES = np.array([8, 20, 50, 128, 320])


def test_fit_recovers_the_irreducible_term_and_the_exponent():
    fit = fit_saturating_power_law(SIZES, -3.0 + 2.0 * SIZES ** -0.6)
    assert fit["identifiable"] and fit["improves"] and fit["reason"] == ""
    assert fit["alpha"] == pytest.approx(0.6, rel=1e-4) and fit["E"] == pytest.approx(-3.0, abs=1e-4)
    assert fit["A"] == pytest.approx(2.0, rel=1e-3)
    # a score that rises to 0.8 is the same curve upside down (A < 0)
    score = fit_saturating_power_law(SIZES, 0.8 - 0.5 * SIZES ** -0.4, direction=1)
    assert score["identifiable"] and score["alpha"] == pytest.approx(0.4, rel=1e-4) and score["A"] < 0


@pytest.mark.parametrize("sizes, values, reason", [
    ([8, 32], [1.0, 0.9], "2 pretraining size(s)"),
    ([8, 8, 32, 32], [1.0, 1.1, 0.9, 0.8], "2 pretraining size(s)"),
    ([8, 32, 128], [0.5, 0.5, 0.5], "flat"),
    ([8, 32, 128], [0.5, 0.6, 0.7], "no gain from data: the fitted curve rises"),
])
def test_fits_that_cannot_be_made_say_why(sizes, values, reason):
    fit = fit_saturating_power_law(sizes, values)
    assert not fit["identifiable"] and fit["reason"].startswith(reason)
    assert fit["alpha"] == 0 or np.isnan(fit["alpha"])


def test_with_one_seed_a_curve_through_a_flat_noisy_loss_is_not_an_exponent():
    # the comparison's Seq-BERT: a loss flat to 1e-3 whose best curve falls, with alpha inside the range
    flat = pd.DataFrame({"size": [8, 20, 50, 128], "seed": 0, "value": [1.47692, 1.47705, 1.47575, 1.47727]})
    assert fit_saturating_power_law(flat["size"], flat["value"])["identifiable"]  # the point fit alone
    fit = bootstrap_fit(flat)
    assert fit["improves"] and fit["r2"] < 0.1 and ALPHA_RANGE[0] < fit["alpha"] < ALPHA_RANGE[1]
    assert not fit["identifiable"] and "of the points' variance" in fit["reason"] and "one pretraining seed" in \
        fit["reason"]
    assert bootstrap_fit(flat.assign(value=[1.40, 1.30, 1.26, 1.25]))["identifiable"]


def test_three_sizes_fit_exactly_and_say_so():
    fit = fit_saturating_power_law([8, 32, 128], [-2.7, -3.0, -3.07])
    assert fit["identifiable"] and fit["r2"] == pytest.approx(1.0) and "not tested" in fit["reason"]


def test_bootstrap_over_seeds_covers_the_truth_and_reflects_their_spread():
    rng = np.random.default_rng(0)
    points = pd.DataFrame([{"size": size, "seed": seed} for size in SIZES for seed in range(3)])
    truth = -3.0 + 2.0 * points["size"] ** -0.6
    quiet = bootstrap_fit(points.assign(value=truth + 0.002 * rng.standard_normal(len(points))), n_boot=300)
    noisy = bootstrap_fit(points.assign(value=truth + 0.05 * rng.standard_normal(len(points))), n_boot=300)
    for fit, error in ((quiet, 0.02), (noisy, 0.3)):
        assert fit["n_seeds"] == 3 and fit["n_boot"] == 300
        assert fit["alpha_ci_low"] <= fit["alpha"] <= fit["alpha_ci_high"] and fit["E_ci_low"] <= fit["E"] <= \
            fit["E_ci_high"]
        # three seeds make a narrow percentile interval (it misses the truth by a little at times): near it
        assert abs(fit["alpha"] - 0.6) < error and fit["alpha_ci_low"] - error < 0.6 < fit["alpha_ci_high"] + error
    assert noisy["alpha_ci_high"] - noisy["alpha_ci_low"] > 3 * (quiet["alpha_ci_high"] - quiet["alpha_ci_low"])
    # the same seed every time: the same CI
    assert bootstrap_fit(points.assign(value=truth), n_boot=50, seed=4) == bootstrap_fit(points.assign(value=truth),
                                                                                           n_boot=50, seed=4)
    one_seed = bootstrap_fit(points[points["seed"] == 0].assign(value=truth[points["seed"] == 0]))
    assert one_seed["identifiable"] and np.isnan(one_seed["alpha_ci_low"]) and "one pretraining seed" in \
        one_seed["reason"]


def test_a_table_fits_each_group_against_subjects_and_hours():
    rows = []
    for model, alpha in (("semantoks-tiny", 0.5), ("netbert-tiny", 0.0)):
        for size in SIZES:
            for seed in (0, 1):
                hours = size * (0.12 + 0.01 * seed)  # each seed's subset has its own hours
                value = 1.0 + (size ** -alpha if alpha else 0.0) + 0.001 * seed
                rows.append({"model": model, "size": size, "seed": seed, "hours": hours, "value": value})
    table = scaling_law_table(pd.DataFrame(rows), measure="val_loss", direction=-1,
                              axes={"size": "subjects", "hours": "hours"}, group=["model"], n_boot=100)
    assert len(table) == 4 and set(table["axis"]) == {"subjects", "hours"} and (table["measure"] == "val_loss").all()
    semantoks = table[table["model"] == "semantoks-tiny"].set_index("axis")
    assert semantoks["identifiable"].all() and (semantoks["n_seeds"] == 2).all()
    assert semantoks.loc["subjects", "alpha"] == pytest.approx(0.5, abs=0.01)
    assert np.isfinite(semantoks.loc["hours", "alpha_ci_low"])  # resampled by size, not by each seed's hours
    flat = table[table["model"] == "netbert-tiny"]
    assert (~flat["identifiable"]).all() and (flat["alpha"] == 0).all()


def test_table_intervals_resample_pretraining_seeds_and_their_splits():
    splits = np.tile(np.linspace(-0.01, 0.01, 10), 2)
    seeds = np.repeat([0, 1], 10)
    agree = _summary(0.6 + splits, seeds)
    disagree = _summary(0.6 + splits + np.where(seeds == 0, -0.05, 0.05), seeds)
    assert agree["n"] == disagree["n"] == 20 and agree["n_seeds"] == 2
    assert disagree["seed_min"] == pytest.approx(0.55) and disagree["seed_max"] == pytest.approx(0.65)
    # the spread between seeds widens the interval; the splits alone would not
    assert (disagree["ci_high"] - disagree["ci_low"]) > 4 * (agree["ci_high"] - agree["ci_low"])
    assert agree["ci_low"] < 0.6 < agree["ci_high"]
    single = _summary([0.5])
    assert single["mean"] == 0.5 and np.isnan(single["ci_low"]) and single["n_seeds"] == 1


def test_one_standard_error_choice_keeps_the_strongest_where_scores_are_flat():
    """Features that carry nothing: the argmax of flat out-of-fold scores is decided by noise, one_se is not."""
    rng = np.random.default_rng(1)
    subjects = np.array([f"sub-{i:03d}" for i in range(60)])
    rows = np.repeat(np.arange(60), 6)
    grid = [1e-4, 1e-2, 1.0, 100.0]
    chosen = {"best": [], "one_se": []}
    for seed in range(6):
        features = rng.normal(size=(len(rows), 32))
        sex = pd.Series((rng.random(60) < 0.5).astype(int), index=subjects)
        split = split_probe_subjects(sex, "classification", [0.6, 0.2, 0.2], seed)
        for selection in chosen:
            metrics, _ = probe_one(features, subjects[rows], sex, split, "classification", grid, seed=seed,
                                   selection=selection)
            chosen[selection].append(metrics["strength"])
    assert all(one_se >= best for one_se, best in zip(chosen["one_se"], chosen["best"])), chosen
    assert chosen["one_se"].count(100.0) >= 4 > chosen["best"].count(100.0), chosen


def test_a_point_fit_the_seeds_do_not_support_is_not_reported_as_measured():
    points = pd.DataFrame([{"size": size, "seed": seed} for size in SIZES for seed in range(2)])
    # one seed falls with data, the other rises almost as much: the mean falls, the seeds disagree
    slope = np.where(points["seed"] == 0, 0.5, -0.45)
    fit = bootstrap_fit(points.assign(value=1.0 + slope * points["size"] ** -0.5), n_boot=300)
    assert fit["improves"] and fit["alpha_ci_low"] == 0
    assert not fit["identifiable"] and fit["reason"].startswith("alpha's CI includes 0"), fit


def test_logs_without_a_held_out_loss_give_a_reason_not_a_crash(tmp_path):
    from brainscale.scaling_laws import final_losses

    keys = [("semantoks-tiny", size, 0) for size in (8, 20, 50)]
    paths = []
    for _, size, _ in keys:
        path = tmp_path / f"{size}.csv"
        pd.DataFrame({"step": [0, 1], "samples_seen": [8, 16], "loss": [1.0, 0.9]}).to_csv(path, index=False)
        paths.append(path)
    points = final_losses(paths, keys)
    assert points["val_loss"].isna().all() and list(points["size"]) == [8, 20, 50]
    fit = bootstrap_fit(points.assign(value=points["val_loss"]))
    assert not fit["identifiable"] and fit["reason"].startswith("no finite value")
