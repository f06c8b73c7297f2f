"""Read shards for training: a PyTorch ``Dataset`` of 100-TR crops, one subject per item.

- The index (which rows belong to which subject, and each row's usable length) is read at
  construction and every file is closed again; HDF5 files are opened lazily inside each
  worker process (h5py handles must never cross a fork).
- One epoch (a pass) visits every subject once; each visit takes a random run of the subject
  and a random crop of it. Randomness comes from ``(seed, epoch, item)``, so a run does not
  depend on the number of workers. ``set_epoch`` moves to the next epoch; an item may also be
  asked for as ``dataset[(epoch, item)]``, so that one batch can hold items of two passes.
- With ``views`` > 1, ``view_mode`` says how the crops of one item relate (see
  :data:`VIEW_MODES`): independent starts in one run, starts at least ``min_gap`` apart in one
  run, or different runs of the subject where it has several.
- A run is cut at its first time point where any channel is NaN (the padding): shards written
  by brainscale vouch that ``ts_len`` is that point; other shards are scanned once at
  construction. A run shorter than the crop is zero-padded. Only the crop window is read.
- ``crops="eval"`` instead enumerates every run with ``n_eval_crops`` evenly spaced,
  deterministic crops.
- ``preload=True`` reads everything into memory first (checked against ``max_preload_gb``).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import torch
from torch.utils.data import Dataset

from ..errors import BrainscaleError
from .writer import GROUPS, MANIFEST, sha256_of

__all__ = ["ShardCorrupted", "verify_shards", "shard_paths", "subjects_from_shards", "subject_hours", "ShardDataset",
           "VIEW_MODES", "distant_starts"]

#: How the views of one training item are drawn.
VIEW_MODES = {
    "independent": "independent random starts in one random run (the reference; views may overlap)",
    "distant": "one random run, starts at least min_gap TRs apart (capped at what the run allows)",
    "cross_run": "two different runs of the subject where it has several, else as distant",
}


class ShardCorrupted(BrainscaleError, RuntimeError):
    """A shard's checksum differs from the manifest."""


def shard_paths(folder: str | Path) -> list[Path]:
    """The shard files listed in a folder's manifest."""
    folder = Path(folder)
    manifest = json.loads((folder / MANIFEST).read_text())
    return [folder / entry["file"] for entry in manifest["shards"]]


def verify_shards(folder: str | Path) -> list[str]:
    """Compare every shard's SHA-256 with the manifest; return one line per problem (empty: all good)."""
    folder = Path(folder)
    manifest_path = folder / MANIFEST
    if not manifest_path.is_file():
        return [f"{manifest_path}: missing; rebuild the shards (snakemake build_shards)"]
    manifest = json.loads(manifest_path.read_text())
    problems = []
    for entry in manifest["shards"]:
        path = folder / entry["file"]
        if not path.is_file():
            problems.append(f"{path}: missing")
        elif sha256_of(path) != entry["sha256"]:
            problems.append(f"{path}: SHA-256 differs from {MANIFEST}: the file changed or is corrupted after "
                            "it was written; rebuild the shards (delete the folder and rerun snakemake)")
    return problems


def subjects_from_shards(paths: list[Path], labels: list[str] | None = None) -> pd.DataFrame:
    """One row per subject (index: id as str) with its label values (from its first run)."""
    frames = []
    for path in paths:
        with h5py.File(path, "r") as shard:
            ids = [value.decode() for value in shard["long_subject_id"][:]]
            names = labels if labels is not None else [k for k in shard.keys()
                                                       if isinstance(shard[k], h5py.Dataset) and
                                                       shard[k].shape == (len(ids),) and
                                                       shard[k].dtype.kind == "f"]
            frames.append(pd.DataFrame({name: shard[name][:] for name in names}, index=pd.Index(ids, name="subject")))
    table = pd.concat(frames)
    return table[~table.index.duplicated(keep="first")].sort_index()


def subject_hours(paths: list[Path], repetition_time: float) -> pd.Series:
    """Hours of usable time series per subject (index: id as str): the sum of its runs' ``ts_len`` x TR.

    ``repetition_time`` is the shards' TR in seconds (``preprocess.target_tr``).
    """
    totals: dict[str, float] = {}
    for path in paths:
        with h5py.File(path, "r") as shard:
            ids = [value.decode() for value in shard["long_subject_id"][:]]
            lengths = shard["ts_len"][:]
        for subject, length in zip(ids, lengths):
            totals[subject] = totals.get(subject, 0.0) + float(length) * repetition_time / 3600.0
    return pd.Series(totals, name="hours").rename_axis("subject").sort_index()


def pad_crop(crop: np.ndarray, length: int) -> np.ndarray:
    """(channels, t) -> (channels, length): a run shorter than a crop is zero-padded at the end."""
    if crop.shape[1] < length:
        crop = np.pad(crop, ((0, 0), (0, length - crop.shape[1])))
    return crop


def distant_starts(rng: np.random.Generator, length: int, crop_length: int, min_gap: int) -> list[int]:
    """Two crop starts in a run of ``length`` TRs, at least ``min(min_gap, length - crop_length)`` apart.

    The distance is drawn uniformly from what the run allows, the pair's position uniformly
    for that distance, and the order of the two views at random.
    """
    highest = max(length - crop_length, 0)  # the last possible start
    gap = min(min_gap, highest)
    distance = int(rng.integers(gap, highest + 1))
    first = int(rng.integers(0, highest - distance + 1))
    starts = [first, first + distance]
    return starts[::-1] if rng.random() < 0.5 else starts


def _usable_length(block: np.ndarray) -> int:
    """Time points before the first one where any channel is NaN."""
    bad = np.isnan(block).any(axis=0)
    return int(np.argmax(bad)) if bad.any() else block.shape[1]


class ShardDataset(Dataset):
    """Crops of preprocessed runs from one or more shards (see the module docstring).

    Parameters
    ----------
    paths : list of paths
        Shard files.
    subjects : array of str, optional
        Keep only these subjects (e.g. a pretraining subset); None keeps all.
    crop_length : int, default=100
    crops : {"random", "eval"}
    n_eval_crops : int, default=8
    seed : int
    preload : bool
    max_preload_gb : float
    verify : bool
        Check the shards against their folder's manifest first (raises ShardCorrupted).

    views : int
        Random crops per item (``views`` > 1: x gets a leading views axis), for self-supervised
        objectives.
    view_mode : {"independent", "distant", "cross_run"}
        How the views of an item are drawn (:data:`VIEW_MODES`); ``distant`` and ``cross_run``
        need ``views`` = 2.
    min_gap : int, optional
        Least distance in TRs between the starts of ``distant`` views (default: ``crop_length``,
        i.e. views that do not overlap where the run is long enough).

    Items are ``(x, missing, subject_index)``: x (457, crop_length) float32, missing (457,) bool.
    """

    def __init__(self, paths, subjects=None, *, crop_length: int = 100, crops: str = "random",
                 n_eval_crops: int = 8, seed: int = 0, preload: bool = False, max_preload_gb: float = 8.0,
                 verify: bool = True, views: int = 1, view_mode: str = "independent", min_gap: int | None = None):
        if crops not in ("random", "eval"):
            raise ValueError(f"crops must be 'random' or 'eval', received {crops!r}")
        if view_mode not in VIEW_MODES:
            raise ValueError(f"view_mode must be one of {sorted(VIEW_MODES)}, received {view_mode!r}")
        if view_mode != "independent" and views != 2:
            raise ValueError(f"view_mode {view_mode!r} draws pairs of views: use views=2 (received {views})")
        self.paths = [str(p) for p in paths]
        if not self.paths:
            raise ValueError("no shard given")
        if verify:
            problems = [line for folder in sorted({str(Path(p).parent) for p in self.paths})
                        for line in verify_shards(folder)]
            if problems:
                raise ShardCorrupted("; ".join(problems))
        self.crop_length, self.crops, self.n_eval_crops, self.seed = crop_length, crops, n_eval_crops, seed
        self.views, self.view_mode = views, view_mode
        self.min_gap = crop_length if min_gap is None else int(min_gap)
        self.epoch = 0
        wanted = None if subjects is None else {str(s) for s in subjects}
        rows, missing_rows = [], []  # rows: (shard index, row, usable length, subject)
        for shard_index, path in enumerate(self.paths):
            with h5py.File(path, "r") as shard:
                ids = [value.decode() for value in shard["long_subject_id"][:]]
                keep = [row for row, subject in enumerate(ids) if wanted is None or subject in wanted]
                if not keep:
                    continue
                lengths = self._usable_lengths(shard, keep)
                missing = shard["channel_missing"][:] if "channel_missing" in shard else \
                    np.zeros((len(ids), sum(n for _, n in GROUPS)), dtype=bool)
                for row, length in zip(keep, lengths):
                    rows.append((shard_index, row, int(length), ids[row]))
                    missing_rows.append(missing[row])
        if not rows:
            raise ValueError("no run of the requested subjects in these shards")
        self.subject_ids = sorted({subject for *_, subject in rows})
        if wanted is not None and len(self.subject_ids) < len(wanted):
            absent = sorted(wanted - set(self.subject_ids))
            raise ValueError(f"{len(absent)} requested subjects have no run in the shards, e.g. {absent[:3]}")
        position = {subject: i for i, subject in enumerate(self.subject_ids)}
        self.runs_of_subject = [[] for _ in self.subject_ids]
        self.runs = []
        for shard_index, row, length, subject in rows:
            self.runs_of_subject[position[subject]].append(len(self.runs))
            self.runs.append((shard_index, row, length, position[subject]))
        self.missing = np.asarray(missing_rows, dtype=bool)  # (runs, channels)
        self._datasets: dict = {}
        self._pid = None
        self._memory = self._preload(max_preload_gb) if preload else None

    @staticmethod
    def _usable_lengths(shard: h5py.File, rows: list[int]) -> np.ndarray:
        """Length of each row before its first NaN on any channel (trusting ts_len where the writer vouches)."""
        if "ts_len" in shard and shard.attrs.get("ts_len_is_nan_free", False):
            return shard["ts_len"][:][rows]
        lengths = []
        for row in rows:  # shards written elsewhere: scan each run once
            block = np.concatenate([shard[f"timeseries/{name}"][row] for name, _ in GROUPS])
            lengths.append(_usable_length(block))
        return np.asarray(lengths)

    # --- access -----------------------------------------------------------------------------
    def _preload(self, max_gb: float) -> list[np.ndarray]:
        size = 0.0
        for path in self.paths:
            with h5py.File(path, "r") as shard:
                size += sum(shard[f"timeseries/{n}"].size for n, _ in GROUPS) * 4 / 1e9
        if size > max_gb:
            raise MemoryError(f"preloading needs about {size:.1f} GB, above max_preload_gb={max_gb}; "
                              "read lazily (preload=False) or raise the limit")
        memory = []
        for path in self.paths:
            with h5py.File(path, "r") as shard:
                memory.append(np.concatenate([shard[f"timeseries/{n}"][:] for n, _ in GROUPS], axis=1)
                              .astype(np.float32))
        return memory

    def _shard_datasets(self, index: int) -> list:
        if self._pid != os.getpid():  # first use in this process (e.g. a fresh DataLoader worker)
            self._datasets = {}
            self._pid = os.getpid()
        if index not in self._datasets:
            shard = h5py.File(self.paths[index], "r")
            self._datasets[index] = [shard[f"timeseries/{name}"] for name, _ in GROUPS]
        return self._datasets[index]

    def _read(self, run: int, start: int, stop: int) -> np.ndarray:
        """(channels, stop - start) float32 of one run."""
        shard_index, row, _, _ = self.runs[run]
        if self._memory is not None:
            return self._memory[shard_index][row, :, start:stop]
        return np.concatenate([dataset[row, :, start:stop] for dataset in self._shard_datasets(shard_index)]
                              ).astype(np.float32)

    def read_run(self, run: int) -> tuple[np.ndarray, np.ndarray]:
        """(457, usable length) float32 and the (457,) missing-channel mask of one run."""
        return self._read(run, 0, self.runs[run][2]), self.missing[run]

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def eval_starts(self, length: int) -> np.ndarray:
        return np.linspace(0, max(length - self.crop_length, 0), self.n_eval_crops).round().astype(int)

    def __len__(self) -> int:
        return len(self.subject_ids) if self.crops == "random" else len(self.runs) * self.n_eval_crops

    def _crop_at(self, run: int, start: int) -> np.ndarray:
        stop = min(start + self.crop_length, self.runs[run][2])
        return np.ascontiguousarray(pad_crop(self._read(run, start, stop), self.crop_length))

    @property
    def subjects_with_several_runs(self) -> int:
        return sum(len(runs) > 1 for runs in self.runs_of_subject)

    def _random_views(self, item: int, epoch: int) -> list[tuple[int, int]]:
        """(run, start) of each view of subject ``item`` in pass ``epoch``."""
        rng = np.random.default_rng([self.seed, epoch, item])
        candidates = self.runs_of_subject[item]
        if self.view_mode == "cross_run" and len(candidates) > 1:
            first, second = rng.choice(len(candidates), size=2, replace=False)
            runs = [candidates[int(first)], candidates[int(second)]]
            return [(run, int(rng.integers(0, max(self.runs[run][2] - self.crop_length, 0) + 1))) for run in runs]
        run = candidates[int(rng.integers(len(candidates)))]
        if self.view_mode == "independent":
            highest = max(self.runs[run][2] - self.crop_length, 0) + 1
            return [(run, int(rng.integers(0, highest))) for _ in range(self.views)]
        return [(run, start) for start in distant_starts(rng, self.runs[run][2], self.crop_length, self.min_gap)]

    def __getitem__(self, key):
        if self.crops == "random":
            epoch, item = key if isinstance(key, tuple) else (self.epoch, key)
            views = self._random_views(int(item), int(epoch))
        else:
            run, crop = divmod(key, self.n_eval_crops)
            views = [(run, int(self.eval_starts(self.runs[run][2])[crop]))]
        crops = [self._crop_at(run, start) for run, start in views]
        x = crops[0] if len(crops) == 1 else np.stack(crops)
        missing = np.logical_or.reduce([self.missing[run] for run, _ in views])  # a channel any view lacks
        return torch.from_numpy(x), torch.from_numpy(missing), self.runs[views[0][0]][3]

    def __getstate__(self):
        state = self.__dict__.copy()
        state["_datasets"], state["_pid"] = {}, None  # never pickle open HDF5 handles
        return state
