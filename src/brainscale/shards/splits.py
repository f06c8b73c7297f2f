"""Subject-level splits: a probe set held out of pretraining, and nested pretraining subsets.

A subject's runs always travel together. The probe set (train / validation / test) is
drawn from the subjects that carry the stratification label; the rest is the
pretraining pool. For each seed, one permutation of the pool is drawn and the subset of
size n is its first n subjects, so the n=100 subset lies inside the n=1000 subset.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from ..errors import BrainscaleError
from ..io import atomic_directory

__all__ = ["SplitError", "probe_split", "pretraining_subsets", "write_splits", "subset_name", "probe_subjects"]


class SplitError(BrainscaleError, ValueError):
    """The requested split cannot be made from these subjects."""


def subset_name(size: int, seed: int) -> str:
    return f"pretrain_n-{size}_seed-{seed}"


def probe_split(subjects: pd.DataFrame, *, fraction: float, proportions: list[float], stratify: str | None,
                seed: int) -> dict[str, np.ndarray]:
    """Draw the probe set and split it into train, val and test.

    Parameters
    ----------
    subjects : pandas.DataFrame
        One row per subject, indexed by subject id, with label columns.
    fraction : float
        Share of the eligible subjects (those with the stratification label) in the probe set.
    proportions : list of 3 floats
        Train, validation, test proportions (normalised).
    stratify : str or None
        Label column to stratify on (its classes keep their proportions in every part).

    Returns
    -------
    dict with keys ``train``, ``val``, ``test``, ``pool`` (the pretraining pool), sorted id arrays.
    """
    rng = np.random.default_rng(seed)
    if stratify is not None:
        if stratify not in subjects.columns:
            raise SplitError(f"splits.stratify: label '{stratify}' is not among the shard labels "
                             f"({', '.join(subjects.columns)}). Use one of them or null.")
        eligible = subjects.index[subjects[stratify].notna()]
        groups = [eligible[subjects.loc[eligible, stratify] == value] for value in
                  sorted(subjects.loc[eligible, stratify].unique())]
    else:
        eligible = subjects.index
        groups = [eligible]
    shares = np.asarray(proportions, dtype=float) / np.sum(proportions)
    parts = {"train": [], "val": [], "test": []}
    for group in groups:
        members = rng.permutation(np.asarray(group))
        n_probe = int(round(fraction * len(members)))
        bounds = np.round(np.cumsum(shares) * n_probe).astype(int)
        parts["train"].extend(members[: bounds[0]])
        parts["val"].extend(members[bounds[0]: bounds[1]])
        parts["test"].extend(members[bounds[1]: n_probe])
    for name, members in parts.items():
        if not members:
            raise SplitError(f"the probe {name} split is empty ({len(eligible)} eligible subjects, "
                             f"probe_fraction {fraction}). Raise splits.probe_fraction or use more subjects.")
    probe = set().union(*map(set, parts.values()))
    result = {name: np.array(sorted(members)) for name, members in parts.items()}
    result["pool"] = np.array(sorted(set(subjects.index) - probe))
    return result


def pretraining_subsets(pool: np.ndarray, sizes: list[int], seeds: list[int]) -> dict[tuple[int, int], np.ndarray]:
    """Nested subsets of the pretraining pool: ``{(size, seed): sorted ids}``.

    Raises
    ------
    SplitError
        If a size exceeds the pool, naming the pool size.
    """
    too_big = sorted(size for size in sizes if size > len(pool))
    if too_big:
        raise SplitError(f"splits.pretrain_sizes {too_big} exceed the pretraining pool of {len(pool)} subjects "
                         "(subjects with an included run, minus the probe set). Use sizes up to "
                         f"{len(pool)}, or lower splits.probe_fraction.")
    subsets = {}
    for seed in seeds:
        order = np.random.default_rng([seed, 1]).permutation(np.sort(pool))
        for size in sizes:
            subsets[(size, seed)] = np.sort(order[:size])
    return subsets


def _save_ids(folder: Path, name: str, ids: np.ndarray) -> None:
    np.save(folder / f"{name}.npy", np.asarray(ids, dtype="S"))
    pd.DataFrame({"participant_id": ids}).to_csv(folder / f"{name}.tsv", sep="\t", index=False)


def write_splits(subjects: pd.DataFrame, settings: dict, output_dir: str | Path) -> dict:
    """Compute the probe split and pretraining subsets and save them as ``.npy`` (bytes) + ``.tsv``.

    Returns a summary ``{name: number of subjects}``.
    """
    probe = probe_split(subjects, fraction=settings["probe_fraction"], proportions=settings["probe_proportions"],
                        stratify=settings["stratify"], seed=settings["seed"])
    subsets = pretraining_subsets(probe["pool"], settings["pretrain_sizes"], settings["pretrain_seeds"])
    summary = {}
    with atomic_directory(output_dir, overwrite=True) as folder:
        for name in ("train", "val", "test"):
            _save_ids(folder, f"probe_{name}", probe[name])
            summary[f"probe_{name}"] = len(probe[name])
        _save_ids(folder, "pretrain_pool", probe["pool"])
        summary["pretrain_pool"] = len(probe["pool"])
        for (size, seed), ids in subsets.items():
            _save_ids(folder, subset_name(size, seed), ids)
            summary[subset_name(size, seed)] = len(ids)
        pd.Series(summary, name="subjects").rename_axis("split").to_csv(folder / "summary.tsv", sep="\t")
    return summary


def probe_subjects(splits_dir: str | Path) -> np.ndarray:
    """The probe set: every subject of ``probe_train``, ``probe_val`` and ``probe_test`` (sorted)."""
    parts = [np.load(Path(splits_dir) / f"probe_{name}.npy").astype(str) for name in ("train", "val", "test")]
    return np.sort(np.concatenate(parts))
