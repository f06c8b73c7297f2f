"""The simulated cohort: participants, latent traits, phenotypes and the runs to write."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from .dynamics import LATENTS

__all__ = ["PHENOTYPE_MODEL", "POPULATION_AGE", "RunPlan", "simulate_participants", "dynamics_traits", "plan_runs"]

#: How each phenotype is drawn from the latent traits (the ground truth the oracle uses).
PHENOTYPE_MODEL = {
    "sex": {"latent": "sex", "rule": "F if latent_sex + noise > 0 else M", "noise_sd": 0.35},
    "age": {"latent": "age", "rule": "site age_mean + site age_sd * (0.85 * latent_age + 0.53 * noise), "
                                     "clipped to [18, 90] years", "weight": 0.85, "noise_sd": 0.53},
    "fluid_intelligence": {"latent": "cognition", "rule": "100 + 15 * (0.8 * latent_cognition + 0.6 * noise)",
                           "weight": 0.8, "noise_sd": 0.6},
}

#: The age (years) the dynamics treat as 0 and the years per unit of their age trait.
POPULATION_AGE = {"mean": 45.0, "sd": 15.0}


@dataclass(frozen=True)
class RunPlan:
    """One run to simulate: who, where, how long and how it goes wrong."""

    subject_index: int
    participant_id: str
    session: str | None
    run: str | None
    site: str
    repetition_time: float
    n_volumes: int
    dummy_scans: int
    high_motion: bool
    short: bool


def _site_rng(seed: int, stream: int) -> np.random.Generator:
    return np.random.default_rng([seed, stream])


def simulate_participants(n_subjects: int, sites: list[dict], seed: int,
                          missing_score_fraction: float) -> tuple[pd.DataFrame, np.ndarray]:
    """Draw latent traits and the phenotypes they drive.

    Returns
    -------
    participants : pandas.DataFrame
        participant_id, age, sex, site, fluid_intelligence (NaN where missing).
    latents : (n_subjects, len(LATENTS)) array
    """
    rng = _site_rng(seed, 0)
    latents = rng.standard_normal((n_subjects, len(LATENTS)))
    site_index = np.arange(n_subjects) % len(sites)
    rng.shuffle(site_index)
    noise = rng.standard_normal((n_subjects, 3))
    z_sex, z_age, z_cog = (latents[:, LATENTS.index(name)] for name in ("sex", "age", "cognition"))
    sex = np.where(z_sex + PHENOTYPE_MODEL["sex"]["noise_sd"] * noise[:, 0] > 0, "F", "M")
    age_mean = np.array([sites[i]["age_mean"] for i in site_index])
    age_sd = np.array([sites[i]["age_sd"] for i in site_index])
    age_model = PHENOTYPE_MODEL["age"]
    age = np.clip(age_mean + age_sd * (age_model["weight"] * z_age + age_model["noise_sd"] * noise[:, 1]), 18, 90)
    score_model = PHENOTYPE_MODEL["fluid_intelligence"]
    score = np.round(100 + 15 * (score_model["weight"] * z_cog + score_model["noise_sd"] * noise[:, 2]))
    score[rng.random(n_subjects) < missing_score_fraction] = np.nan
    participants = pd.DataFrame({
        "participant_id": [f"sub-{i + 1:04d}" for i in range(n_subjects)],
        "age": np.round(age, 1),
        "sex": sex,
        "site": [sites[i]["name"] for i in site_index],
        "fluid_intelligence": score,
    })
    return participants, latents


def dynamics_traits(latents: np.ndarray, participants: pd.DataFrame, sites: list[dict]) -> np.ndarray:
    """The traits the brain dynamics see: the latents, with age on one scale for every site.

    The age latent is relative to the subject's site (age = site mean + site SD * latent, plus
    noise), but a brain ages with the years it has lived, whatever the site: the dynamics' age
    trait is the expected age ``site mean + site SD * latent_age`` in units of
    :data:`POPULATION_AGE` (0 at 45 years, 1 per 15 years). The other traits are the latents.
    """
    by_name = {site["name"]: site for site in sites}
    mean = participants["site"].map(lambda name: by_name[name]["age_mean"]).to_numpy(dtype=np.float64)
    sd = participants["site"].map(lambda name: by_name[name]["age_sd"]).to_numpy(dtype=np.float64)
    traits = np.array(latents, dtype=np.float64, copy=True)
    age = LATENTS.index("age")
    traits[:, age] = (mean + sd * latents[:, age] - POPULATION_AGE["mean"]) / POPULATION_AGE["sd"]
    return traits


def plan_runs(participants: pd.DataFrame, sites: list[dict], seed: int, second_visit_fraction: float,
              high_motion_fraction: float, short_run_fraction: float) -> list[RunPlan]:
    """Decide every run of every participant: visits, lengths and deliberate faults."""
    rng = _site_rng(seed, 1)
    by_name = {site["name"]: site for site in sites}
    plans = []
    for index, row in participants.iterrows():
        site = by_name[row["site"]]
        n_visits = 2 if site["second_visit"] != "none" and rng.random() < second_visit_fraction else 1
        for visit in range(1, n_visits + 1):
            session = str(visit) if site["second_visit"] == "session" else None
            run = str(visit) if site["second_visit"] == "run" else None
            tr = float(site["repetition_time"])
            low, high = site["n_volumes"]
            n_volumes = int(rng.integers(low, high + 1))
            short = bool(rng.random() < short_run_fraction)
            if short:  # 60-150 s: below one 100-TR crop at TR 2 s
                n_volumes = max(20, int(rng.uniform(60, 150) / tr))
            plans.append(RunPlan(
                subject_index=int(index), participant_id=row["participant_id"], session=session, run=run,
                site=site["name"], repetition_time=tr, n_volumes=n_volumes + site["dummy_scans"],
                dummy_scans=site["dummy_scans"], high_motion=bool(rng.random() < high_motion_fraction),
                short=short,
            ))
    return plans
