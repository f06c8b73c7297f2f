"""The cohort card: statistics of a preprocessed cohort next to published resting-state values.

Every number is measured on the pipeline's own outputs (the cleaned parcel time series of
``results/preprocess/``, at the target TR), so the card describes what the models see. On the
simulated demo it is the simulator's calibration ("simulator card"); on a real cohort the same
table says how that cohort compares with the literature.

Functional connectivity (FC) is the Fisher z-transformed Pearson correlation of every pair of
parcels over a whole run (:func:`brainscale.probing.baselines.fisher_z_connectivity`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import signal

from ..probing.baselines import fisher_z_connectivity
from ..probing.reid import NORMALISATIONS, reidentification

__all__ = ["Connectomes", "REFERENCES", "load_connectomes", "identification", "pooled_identification",
           "fc_similarity", "edge_icc", "group_mean_share", "phenotype_from_fc", "signal_statistics",
           "cohort_card", "card_markdown", "write_cohort_card"]


@dataclass
class Connectomes:
    """Whole-run FC of every included run, with the run's subject, and per-run signal statistics."""

    fc: np.ndarray  # (runs, edges) float32
    subjects: np.ndarray  # (runs,) participant ids
    run_ids: np.ndarray  # (runs,)
    n_volumes: np.ndarray  # (runs,) frames at the target TR
    repetition_time: float
    lag1: np.ndarray  # (runs,) mean lag-1 autocorrelation over parcels
    spectrum: np.ndarray  # (frequencies,) mean power spectral density over runs and parcels
    frequencies: np.ndarray  # (frequencies,) Hz


def load_connectomes(timeseries_files: list[str | Path], *, segment_volumes: int = 64) -> Connectomes:
    """Read cleaned runs (``*_desc-clean_timeseries.npz``) into FC and signal statistics.

    Channels a run lacks contribute zeros to its FC (as in the FC baseline). ``segment_volumes``
    is the Welch segment length of the power spectrum.
    """
    if not timeseries_files:
        raise ValueError("load_connectomes: no cleaned runs given; the card needs the preprocessed runs "
                         "(results/preprocess/batch-*/*_desc-clean_timeseries.npz)")
    rows, subjects, run_ids, lengths, lag1, spectra = [], [], [], [], [], []
    repetition_time = None
    for path in sorted(map(str, timeseries_files)):
        with np.load(path) as run:
            data = run["timeseries"].astype(np.float64)  # (channels, T)
            missing = run["channel_missing"].astype(bool)
            tr = float(run["repetition_time"])
            subjects.append(str(run["participant_id"]))
            run_ids.append(str(run["run_id"]))
        if repetition_time is None:
            repetition_time = tr
        elif not np.isclose(tr, repetition_time):
            raise ValueError(f"{path}: repetition time {tr} s differs from the other runs' {repetition_time} s; "
                             "the card compares runs at one TR (preprocess.target_tr)")
        rows.append(fisher_z_connectivity(data, missing))
        lengths.append(data.shape[1])
        present = data[~missing]
        centred = present - present.mean(axis=1, keepdims=True)
        power = np.einsum("ct,ct->c", centred, centred)
        lag1.append(float(np.mean(np.einsum("ct,ct->c", centred[:, 1:], centred[:, :-1]) / np.maximum(power, 1e-12))))
        if data.shape[1] >= segment_volumes:  # a shorter run has no full segment: it stays out of the spectrum
            frequencies, density = signal.welch(centred, fs=1.0 / tr, nperseg=segment_volumes, axis=1)
            spectra.append(density.mean(axis=0))
    if not spectra:
        frequencies, spectra = np.full(1, np.nan), [np.full(1, np.nan)]
    return Connectomes(fc=np.stack(rows), subjects=np.asarray(subjects), run_ids=np.asarray(run_ids),
                       n_volumes=np.asarray(lengths), repetition_time=float(repetition_time), lag1=np.asarray(lag1),
                       spectrum=np.mean(spectra, axis=0), frequencies=frequencies)


def _row_correlations(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(len(a), len(b)) Pearson correlations between the rows of ``a`` and the rows of ``b``."""
    def normalised(x):
        x = np.asarray(x, dtype=np.float64)
        x = x - x.mean(axis=1, keepdims=True)
        return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
    return normalised(a) @ normalised(b).T


def _two_run_pairs(subjects: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Indices (first, second) of the first two runs of every subject that has two or more."""
    first, second = [], []
    for subject in pd.unique(subjects):
        rows = np.flatnonzero(subjects == subject)
        if len(rows) >= 2:
            first.append(rows[0])
            second.append(rows[1])
    return np.asarray(first, dtype=int), np.asarray(second, dtype=int)


def identification(fc: np.ndarray, subjects: np.ndarray) -> dict:
    """Finn et al. (2015) identification: each subject's second run against every subject's first, and back.

    Only subjects with two runs take part; a target run is identified when its most correlated
    database run (raw Pearson correlation of FC edges) is the same subject's. Returns ``accuracy``
    (the mean of both directions) and ``n_subjects``.
    """
    first, second = _two_run_pairs(np.asarray(subjects))
    if len(first) < 2:
        return {"accuracy": np.nan, "n_subjects": len(first)}
    similarity = _row_correlations(fc[second], fc[first])
    truth = np.arange(len(first))
    forward = np.mean(similarity.argmax(axis=1) == truth)
    backward = np.mean(similarity.argmax(axis=0) == truth)
    return {"accuracy": float((forward + backward) / 2), "n_subjects": len(first)}


def pooled_identification(fc: np.ndarray, subjects: np.ndarray, normalisation: str) -> dict:
    """Identification with every run as a candidate: the probes' ``subject_reid`` on whole-run FC.

    Queries are the runs of subjects with two or more runs; candidates are all other runs.
    ``normalisation``: ``raw`` (Pearson of the edges), ``centred`` (the group-mean edge removed
    first, the probes' protocol) or ``zscore`` (every edge standardised over runs first); see
    :func:`brainscale.probing.reid.reidentification`.
    """
    if normalisation not in NORMALISATIONS:
        raise ValueError(f"normalisation must be raw, centred or zscore, received {normalisation!r}")
    result = reidentification(fc, subjects, np.arange(len(fc)), normalisation=normalisation)
    return {"accuracy": result["top1"], "n_queries": result["n_queries"], "n_candidates": len(fc) - 1}


def fc_similarity(fc: np.ndarray, subjects: np.ndarray) -> dict:
    """Mean correlation of FC between two runs of one subject and between runs of different subjects."""
    first, second = _two_run_pairs(np.asarray(subjects))
    if len(first) < 2:
        return {"same": np.nan, "different": np.nan}
    similarity = _row_correlations(fc[first], fc[second])
    off_diagonal = ~np.eye(len(first), dtype=bool)
    return {"same": float(np.mean(np.diag(similarity))), "different": float(np.mean(similarity[off_diagonal]))}


def edge_icc(fc: np.ndarray, subjects: np.ndarray) -> dict:
    """Test-retest reliability of every FC edge, ICC(2,1) over the subjects with two runs.

    Two-way random effects, absolute agreement, single measurement (Shrout and Fleiss 1979), the
    form most studies of Noble et al.'s (2019) meta-analysis report. Returns the ``mean`` and
    ``median`` over edges and ``n_subjects``.
    """
    first, second = _two_run_pairs(np.asarray(subjects))
    n = len(first)
    if n < 3:
        return {"mean": np.nan, "median": np.nan, "n_subjects": n}
    scores = np.stack([fc[first], fc[second]], axis=1).astype(np.float64)  # (n, 2 runs, edges)
    k = 2
    grand = scores.mean(axis=(0, 1))
    subject_means = scores.mean(axis=1)
    run_means = scores.mean(axis=0)
    ms_subjects = k * ((subject_means - grand) ** 2).sum(axis=0) / (n - 1)
    ms_runs = n * ((run_means - grand) ** 2).sum(axis=0) / (k - 1)
    residual = scores - subject_means[:, None] - run_means[None] + grand
    ms_error = (residual**2).sum(axis=(0, 1)) / ((n - 1) * (k - 1))
    icc = (ms_subjects - ms_error) / (ms_subjects + (k - 1) * ms_error + k * (ms_runs - ms_error) / n)
    return {"mean": float(np.mean(icc)), "median": float(np.median(icc)), "n_subjects": n}


def group_mean_share(fc: np.ndarray) -> dict:
    """How much of each run's FC the group-mean FC explains.

    ``r2``: the mean over runs of the squared correlation between the run's edges and the group
    mean's. ``variance_share``: one minus the runs' summed squared deviation from the group mean
    over their summed squared deviation from their own mean edge (the share of all edge variance,
    across runs and edges, that the group mean accounts for).
    """
    data = np.asarray(fc, dtype=np.float64)
    mean = data.mean(axis=0)
    r = _row_correlations(data, mean[None])[:, 0]
    about_own_mean = ((data - data.mean(axis=1, keepdims=True)) ** 2).sum()
    return {"r2": float(np.mean(r**2)), "variance_share": float(1 - ((data - mean) ** 2).sum() / about_own_mean)}


def phenotype_from_fc(fc: np.ndarray, target: np.ndarray, *, kind: str, seed: int, n_splits: int = 5,
                      n_repeats: int = 4, groups: np.ndarray | None = None) -> dict:
    """Cross-validated linear prediction of a phenotype from FC, one row per subject.

    Ridge regression (``kind="regression"``: Pearson r and mean absolute error of the held-out
    predictions) or a ridge classifier (``kind="classification"``: balanced accuracy), the ridge
    strength chosen by efficient leave-one-out inside each training fold, edges standardised on
    the training fold. Repeated stratified (classification) or plain k-fold splits seeded by
    ``seed``; the figures are means over repeats. With ``groups`` (e.g. the site of each subject),
    a regression also reports ``r_within``: the correlation after each group's mean is removed from
    the targets and from the predictions.
    """
    from sklearn.linear_model import RidgeClassifierCV, RidgeCV
    from sklearn.metrics import balanced_accuracy_score
    from sklearn.model_selection import KFold, StratifiedKFold

    features = np.asarray(fc, dtype=np.float64)
    target = np.asarray(target)
    alphas = np.logspace(0, 6, 13) * features.shape[1] / 1000
    scores = []
    for repeat in range(n_repeats):
        if kind == "classification":
            folds = StratifiedKFold(n_splits, shuffle=True, random_state=seed + repeat).split(features, target)
        else:
            folds = KFold(n_splits, shuffle=True, random_state=seed + repeat).split(features)
        predicted = np.empty(len(target), dtype=target.dtype if kind == "classification" else np.float64)
        for train, test in folds:
            mean, spread = features[train].mean(axis=0), features[train].std(axis=0)
            spread[spread == 0] = 1.0
            model = (RidgeClassifierCV if kind == "classification" else RidgeCV)(alphas=alphas)
            model.fit((features[train] - mean) / spread, target[train])
            predicted[test] = model.predict((features[test] - mean) / spread)
        if kind == "classification":
            scores.append({"balanced_accuracy": balanced_accuracy_score(target, predicted)})
        else:
            score = {"r": float(np.corrcoef(target, predicted)[0, 1]),
                     "mae": float(np.mean(np.abs(target - predicted)))}
            if groups is not None:
                def within(values):
                    return values - pd.Series(values).groupby(np.asarray(groups)).transform("mean").to_numpy()
                score["r_within"] = float(np.corrcoef(within(target.astype(float)), within(predicted))[0, 1])
            scores.append(score)
    return {key: float(np.mean([s[key] for s in scores])) for key in scores[0]} | {"n_subjects": len(target)}


def signal_statistics(connectomes: Connectomes) -> dict:
    """Lag-1 autocorrelation, and the power-law exponent and band share of the parcel signals' spectrum.

    ``exponent``: beta of P(f) ~ 1 / f**beta fitted by least squares in log-log over 0.01-0.1 Hz.
    ``band_share``: the share of power between 0.01 and 0.1 Hz.
    """
    f, p = connectomes.frequencies, connectomes.spectrum
    band = (f >= 0.01) & (f <= 0.1)
    slope = np.polyfit(np.log10(f[band]), np.log10(p[band]), 1)[0] if band.sum() >= 2 else np.nan
    positive = f > 0
    return {"lag1": float(np.mean(connectomes.lag1)), "exponent": float(-slope),
            "band_share": float(p[band].sum() / p[positive].sum())}


#: Published values the card compares with: (value or range, the condition, the reference).
REFERENCES = {
    "identification_finn": {
        "published": "92.9% / 94.4% (REST1 to REST2 and back); >= 85% is the target at 5-9 min",
        "low": 0.85, "high": 1.0,
        "condition": "HCP, 126 subjects, 268 nodes, two 14.4-min sessions (1,200 frames at TR 0.72 s); "
                     "no rank-1 rate found for 5-9 min scans, so the issue's 85% stands in",
        "reference": "Finn et al. 2015, Nat Neurosci 18:1664, doi:10.1038/nn.4135"},
    "fc_same_subject": {
        "published": "about 0.6-0.75 (same subject) vs 0.4-0.55 (different subjects), not verified",
        "low": None, "high": None,
        "condition": "whole-brain FC, HCP and MSC; from reviews, not verified against the papers' tables",
        "reference": "Finn et al. 2015; Gratton et al. 2018, Neuron 98:439, doi:10.1016/j.neuron.2018.03.035"},
    "edge_icc": {
        "published": "mean 0.29 (95% CI 0.23-0.36); poor for 5-min scans", "low": 0.23, "high": 0.36,
        "condition": "meta-analysis of 25 studies; edge-level ICC",
        "reference": "Noble, Scheinost & Constable 2019, NeuroImage 203:116157, "
                     "doi:10.1016/j.neuroimage.2019.116157; Noble et al. 2017, Cereb Cortex 27:5415"},
    "sex_from_fc": {
        "published": "65-87% (87% at n=820 with 1 h of data; 66% in a small public sample)",
        "low": 0.65, "high": 0.87,
        "condition": "linear models on whole-brain FC; lower with fewer subjects and shorter scans",
        "reference": "Zhang et al. 2018, Hum Brain Mapp 39:1765, doi:10.1002/hbm.23950; "
                     "Weis et al. 2020, Cereb Cortex; Serin et al. 2024, Neuromethods"},
    "age_from_fc": {
        "published": "r 0.54-0.85 (0.74 at ages 7-30 with 5-min scans; 0.54 from one cohort to another at 8-22)",
        "low": 0.54, "high": 0.85,
        "condition": "FC-only linear age prediction; 0.74: 238 scans, ages 7-30; 0.54: trained on PNC "
                     "(n=1,126), tested on HBN (n=1,387); the upper end, adult lifespan samples, from reviews, "
                     "not verified against a paper",
        "reference": "Dosenbach et al. 2010, Science 329:1358, doi:10.1126/science.1194144; PNC to HBN: "
                     "https://www.psych.ox.ac.uk/publications/1231352"},
    "spectral_exponent": {
        "published": "beta 0.83 at rest (0.69 in task)", "low": None, "high": None,
        "condition": "unfiltered BOLD, mean of 21 regions; a 0.01-0.1 Hz band-pass changes the slope, "
                     "so this is context, not a target",
        "reference": "He 2011, J Neurosci 31:13786, doi:10.1523/JNEUROSCI.2111-11.2011"},
    "lag1": {
        "published": "strong, region-dependent autocorrelation", "low": None, "high": None,
        "condition": "HCP; its size after a 0.01-0.1 Hz band-pass at TR 2 s is set mostly by the filter",
        "reference": "Afyouni, Smith & Nichols 2019, NeuroImage 199:609, doi:10.1016/j.neuroimage.2019.05.011"},
    "group_mean": {
        "published": "group and stable individual factors dominate; task and day-to-day effects are modest",
        "low": None, "high": None,
        "condition": "9 subjects, 10 sessions each (Midnight Scan Club)",
        "reference": "Gratton et al. 2018, Neuron 98:439, doi:10.1016/j.neuron.2018.03.035"},
}


def _row(statistic, value, key, detail, unit=""):
    reference = REFERENCES.get(key, {})
    low, high = reference.get("low"), reference.get("high")
    if not np.isfinite(value):
        verdict = "not measured"
    elif low is None:
        verdict = "context"
    else:
        verdict = "within" if low <= value <= high else ("below" if value < low else "above")
    return {"statistic": statistic, "measured": value, "unit": unit, "measured_on": detail,
            "published": reference.get("published", ""), "target_low": low, "target_high": high,
            "verdict": verdict, "published_condition": reference.get("condition", ""),
            "reference": reference.get("reference", "")}


def cohort_card(connectomes: Connectomes, phenotypes: pd.DataFrame, *, seed: int) -> pd.DataFrame:
    """Measure every statistic of the card (see :data:`REFERENCES`); one row per statistic.

    ``phenotypes``: indexed by participant id, with ``sex`` and ``age`` columns (either may be
    missing; its rows then say so) and, where known, ``site`` (age is then also scored within sites).
    """
    fc, subjects = connectomes.fc, connectomes.subjects
    minutes = connectomes.n_volumes * connectomes.repetition_time / 60
    scans = (f"{len(fc)} runs of {len(pd.unique(subjects))} subjects, {np.median(minutes):.1f} min median "
             f"({minutes.min():.1f}-{minutes.max():.1f}) at TR {connectomes.repetition_time:g} s, "
             f"{int((1 + np.sqrt(1 + 8 * fc.shape[1])) / 2)} parcels")
    rows = []
    finn = identification(fc, subjects)
    rows.append(_row("identification, Finn-style (two-run subjects only)", finn["accuracy"], "identification_finn",
                     f"{finn['n_subjects']} subjects with two runs; raw Pearson of Fisher-z FC; {scans}"))
    for normalisation in ("raw", "centred", "zscore"):
        pooled = pooled_identification(fc, subjects, normalisation)
        rows.append(_row(f"identification, every run a candidate ({normalisation})", pooled["accuracy"], "",
                         f"{pooled['n_queries']} queries among {pooled.get('n_candidates', 0)} candidate runs"))
    similarity = fc_similarity(fc, subjects)
    rows.append(_row("FC similarity, same subject (r)", similarity["same"], "fc_same_subject",
                     "mean correlation of the two runs' FC edges"))
    rows.append(_row("FC similarity, different subjects (r)", similarity["different"], "fc_same_subject",
                     "mean over pairs of runs of different two-run subjects"))
    icc = edge_icc(fc, subjects)
    rows.append(_row("edge test-retest reliability, mean ICC(2,1)", icc["mean"], "edge_icc",
                     f"{icc['n_subjects']} subjects with two runs; median {icc['median']:.3f}"))
    first_runs = pd.Series(np.arange(len(subjects)), index=subjects).groupby(level=0).first()
    table = phenotypes.reindex(first_runs.index)
    for name, key, kind in (("sex", "sex_from_fc", "classification"), ("age", "age_from_fc", "regression")):
        usable = table[name].notna().to_numpy() if name in table else np.zeros(len(table), bool)
        if usable.sum() < 20:
            rows.append(_row(f"{name} from FC", np.nan, key, f"too few subjects with {name} ({usable.sum()})"))
            continue
        sites = table["site"].to_numpy()[usable] if "site" in table and table["site"].notna().all() else None
        several_sites = sites is not None and len(pd.unique(sites)) > 1
        result = phenotype_from_fc(fc[first_runs.to_numpy()[usable]], table[name].to_numpy()[usable],
                                   kind=kind, seed=seed, groups=sites if several_sites else None)
        if kind == "classification":
            rows.append(_row("sex from FC, balanced accuracy", result["balanced_accuracy"], key,
                             f"{result['n_subjects']} subjects (first run each); ridge classifier, 4 x 5-fold CV"))
        else:
            rows.append(_row("age from FC, r", result["r"], key,
                             f"{result['n_subjects']} subjects (first run each); ridge, 4 x 5-fold CV; "
                             f"mean absolute error {result['mae']:.1f} years"))
            if "r_within" in result:
                rows.append(_row("age from FC, r within site", result["r_within"], key,
                                 f"the same predictions, each site's mean age removed from ages and predictions "
                                 f"({len(pd.unique(sites))} sites); single-site studies measure this"))
    signals = signal_statistics(connectomes)
    rows.append(_row(f"lag-1 autocorrelation at TR {connectomes.repetition_time:g} s", signals["lag1"], "lag1",
                     "mean over runs and parcels, after the pipeline's band-pass"))
    rows.append(_row("power-law exponent of the spectrum, 0.01-0.1 Hz", signals["exponent"], "spectral_exponent",
                     f"Welch spectrum, mean over runs and parcels; {signals['band_share']:.0%} of the power "
                     "lies in 0.01-0.1 Hz"))
    share = group_mean_share(fc)
    rows.append(_row("variance of FC explained by the group mean", share["variance_share"], "group_mean",
                     f"across runs and edges; per run, r2 with the group mean {share['r2']:.2f}"))
    return pd.DataFrame(rows)


def card_markdown(card: pd.DataFrame) -> str:
    """The card as a Markdown table (statistic, measured, published, verdict, reference)."""
    lines = ["| statistic | measured | published | verdict | reference |", "| --- | --- | --- | --- | --- |"]
    for row in card.itertuples():
        value = "n/a" if not np.isfinite(row.measured) else f"{row.measured:.3g}"
        lines.append(f"| {row.statistic} | {value} | {row.published} | {row.verdict} | {row.reference} |")
    return "\n".join(lines) + "\n"


def write_cohort_card(timeseries_files: list[str | Path], phenotypes_tsv: str | Path, table_path: str | Path,
                      markdown_path: str | Path, *, seed: int, participants_tsv: str | Path | None = None,
                      log=print) -> pd.DataFrame:
    """Measure the card on the cleaned runs and write it as TSV and Markdown (each written atomically).

    The ``site`` column of ``participants_tsv`` (BIDS participants.tsv), where it has one, adds the
    within-site age row.
    """
    from ..io import write_text_atomic

    if timeseries_files:
        connectomes = load_connectomes(timeseries_files)
        log(f"card: FC of {len(connectomes.fc)} runs, {connectomes.fc.shape[1]} edges each")
        phenotypes = pd.read_csv(phenotypes_tsv, sep="\t", na_values=["n/a"], index_col="participant_id")
        if participants_tsv is not None and "site" not in phenotypes:
            participants = pd.read_csv(participants_tsv, sep="\t", na_values=["n/a"], dtype={"participant_id": str})
            if "site" in participants:
                phenotypes = phenotypes.join(participants.set_index("participant_id")["site"])
        card = cohort_card(connectomes, phenotypes, seed=seed)
    else:  # every run excluded: rule build_shards stops with the reasons
        card = pd.DataFrame([_row("cohort card", np.nan, "",
                                  "no included runs; results/qc/runs.tsv says why each run was excluded")])
    write_text_atomic(table_path, card.to_csv(sep="\t", index=False, na_rep="n/a", float_format="%.4g"))
    write_text_atomic(markdown_path, card_markdown(card))
    for row in card.itertuples():
        reason = "" if np.isfinite(row.measured) else f": {row.measured_on}"
        log(f"{row.statistic}: {row.measured:.3f} ({row.verdict}){reason}")
    return card
