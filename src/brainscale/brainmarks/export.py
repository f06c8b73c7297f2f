"""The probe set as Brainmarks datasets (rule ``brainmarks_export``).

Layout, as Brainmarks' own datasets (``<root>`` is what ``$BRAINSCALE_ROOT`` points the plugin to)::

    <root>/brainscale.<space>.arrow/{train,validation,test}/data-00000-of-00001.arrow
    <root>/targets/brainscale_target_map_<task>.json    {subject: target}
    <root>/export.json                                  what was written, from what, and how

One row per run of the probe subjects: ``sub``, ``run``, ``n_frames``, ``tr``, ``bold`` (frames,
channels) float32, ``mean`` and ``std`` (1, channels). As in Brainmarks' own datasets (ABIDE,
ADHD-200: the first 150 TRs at TR 2.0 s), every row has the same length, the first
``brainmarks.frames`` TRs of its run, so that its loaders can batch them; shorter runs are left out
(``export.json`` counts them). The shards hold runs already z-scored per channel (and band-passed,
which removes the mean), so ``mean`` is 0 and ``std`` 1; a channel a run lacks is zeros.

Brainmarks has one split per dataset: it is our probe split of one classification task at one
split seed (``brainmarks.split_task``, ``brainmarks.split_seed``), so that our probe of that task at
that seed and Brainmarks' ``main_logistic`` see the same subjects. Every probe task gets a
target map: a classification its classes, a continuous label its median split of the probe set
(``<task>_median``: 1 at or above the median), since Brainmarks' probes are classifiers.

The ``schaefer400`` space is the 400 cortical channels in the shards' order, Schaefer's
7-network order. Brainmarks' own ``schaefer400`` data are in the 17-network order: the same
parcels, listed differently. A connectome does not depend on the order; a model with per-channel
weights (BrainHarmonix) does, and ``export.json`` says which order was written.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from ..io import atomic_directory
from ..probing.probes import CLASSIFICATION, resolve_tasks, split_probe_subjects
from ..shards.reader import ShardDataset, shard_paths, subjects_from_shards
from ..shards.splits import probe_subjects
from . import EXPORTED_SPACES, BrainmarksError, run_bold, space_channels

__all__ = ["export_probe_set", "target_maps", "DATASET", "SPLIT_FOLDERS", "target_map_path"]

DATASET = "brainscale"
SPLIT_FOLDERS = {"train": "train", "val": "validation", "test": "test"}  # ours -> Brainmarks'


def target_map_path(root: str | Path, target: str) -> Path:
    return Path(root) / "targets" / f"{DATASET}_target_map_{target}.json"


def target_maps(labels: pd.DataFrame, tasks: dict) -> dict[str, dict]:
    """``{target name: {subject: value}}`` for every task: classes as ints, continuous labels split at the median."""
    maps = {}
    for task, spec in tasks.items():
        values = labels[spec["label"]].dropna()
        if spec["kind"] == CLASSIFICATION:
            maps[task] = {subject: int(value) for subject, value in values.items()}
        else:
            median = float(values.median())
            maps[f"{task}_median"] = {subject: int(value >= median) for subject, value in values.items()}
    return maps


def _split(labels: pd.DataFrame, tasks: dict, split_task: str | None, seed: int, proportions) -> tuple[str, dict]:
    """(task, {train, val, test}) of the split that the export uses."""
    classification = [name for name, spec in tasks.items() if spec["kind"] == CLASSIFICATION]
    if split_task is None:
        if not classification:
            raise BrainmarksError("brainmarks_export: no classification task among probe.tasks to take the split from "
                                  "(Brainmarks' probes are classifiers). Add one, e.g. a label with a map such as sex.")
        split_task = classification[0]
    if split_task not in classification:
        raise BrainmarksError(f"config key 'brainmarks.split_task': '{split_task}' is not a classification task of "
                              f"probe.tasks ({', '.join(classification) or 'none'}). Name one of them.")
    label = labels[tasks[split_task]["label"]].dropna().astype(int)
    return split_task, split_probe_subjects(label, CLASSIFICATION, proportions, seed)


def _features(n_channels: int):
    import datasets

    sequence = getattr(datasets, "List", None) or datasets.Sequence  # List from datasets 4
    matrix = sequence(sequence(datasets.Value("float32")))
    return datasets.Features({"sub": datasets.Value("string"), "run": datasets.Value("string"),
                              "n_frames": datasets.Value("int32"), "tr": datasets.Value("float32"), "bold": matrix,
                              "mean": matrix, "std": matrix})


def _write_split(folder: Path, dataset: ShardDataset, runs: list[int], run_names: list[str], channels: np.ndarray,
                 tr: float, frames: int) -> None:
    """One Arrow stream file of ``runs`` (one record batch per run, so that memory holds one run)."""
    import pyarrow as pa

    schema = _features(len(channels)).arrow_schema
    folder.mkdir(parents=True)
    mean, std = _matrix(np.zeros((1, len(channels)), np.float32)), _matrix(np.ones((1, len(channels)), np.float32))
    with pa.OSFile(str(folder / "data-00000-of-00001.arrow"), "wb") as sink, \
            pa.ipc.new_stream(sink, schema) as writer:
        for run in runs:
            timeseries, _ = dataset.read_run(run)
            bold = run_bold(timeseries, channels, frames)
            subject = dataset.subject_ids[dataset.runs[run][3]]
            writer.write_batch(pa.record_batch([
                pa.array([subject]), pa.array([run_names[run]]), pa.array([frames], type=pa.int32()),
                pa.array([tr], type=pa.float32()), _matrix(bold), mean, std], schema=schema))


def _matrix(values: np.ndarray):
    """One row holding a (rows, columns) float32 matrix as Arrow list<list<float>>, without Python lists."""
    import pyarrow as pa

    n_rows, n_columns = values.shape
    inner = pa.ListArray.from_arrays(np.arange(0, n_rows * n_columns + 1, n_columns, dtype=np.int32),
                                     pa.array(np.ascontiguousarray(values).ravel()))
    return pa.ListArray.from_arrays(np.array([0, n_rows], dtype=np.int32), inner)


def _run_names(dataset: ShardDataset, shard_files: list[Path]) -> list[str]:
    """Each run's ``run_id`` from its shard (the BIDS entities of its file)."""
    import h5py

    ids = {}
    for index, path in enumerate(shard_files):
        with h5py.File(path, "r") as shard:
            ids[index] = [value.decode() for value in shard["run_id"][:]] if "run_id" in shard else None
    names = []
    for shard_index, row, _, position in dataset.runs:
        known = ids[shard_index]
        names.append(known[row] if known else f"{dataset.subject_ids[position]}_row-{row}")
    return names


def export_probe_set(shard_folder: str | Path, splits_dir: str | Path, output_dir: str | Path, *, tasks: dict | None,
                     labels_config: dict, proportions, split_seed: int, split_task: str | None = None,
                     frames: int = 150, repetition_time: float = 2.0, log=None) -> dict:
    """Write the probe set as Brainmarks datasets (see the module docstring); returns the ``export.json`` content.

    Parameters
    ----------
    shard_folder, splits_dir : str or Path
        ``results/shards`` and ``results/splits``.
    output_dir : str or Path
        The root to write (replaced atomically).
    tasks : dict or None
        ``probe.tasks`` (None: every shard label).
    labels_config : dict
        ``shards.labels``.
    proportions : 3 floats
        ``splits.probe_proportions``.
    split_seed : int
        The probe split seed whose split becomes train/validation/test.
    split_task : str, optional
        The classification task whose split it is (default: the first).
    frames : int, default=150
        TRs per row: the first ``frames`` of each run (shorter runs are left out).
    repetition_time : float
        The shards' TR (``preprocess.target_tr``).
    """
    subjects = probe_subjects(splits_dir) if Path(splits_dir, "probe_train.npy").is_file() else np.array([])
    if len(subjects) == 0:
        raise BrainmarksError(f"{splits_dir}: no probe set (probe_train/val/test.npy absent or empty), so there is "
                              "nothing to export. Run rule make_splits with splits.probe_fraction above 0 first "
                              "(snakemake --cores all results/splits).")
    files = shard_paths(shard_folder)
    resolved = resolve_tasks(tasks, labels_config)
    labels = subjects_from_shards(files).reindex(subjects)
    split_task, split = _split(labels, resolved, split_task, split_seed, proportions)
    dataset = ShardDataset(files, np.concatenate(list(split.values())), crop_length=1, crops="eval",
                           n_eval_crops=1)
    n_channels = len(dataset.missing[0]) if len(dataset.runs) else 0
    runs = _runs_by_part(dataset, split, frames)
    maps = target_maps(labels, resolved)
    summary = {"dataset": DATASET, "split_task": split_task, "split_seed": split_seed,
               **_counts(split, runs, maps), "runs_shorter_than_frames": sum(r[2] < frames for r in dataset.runs),
               "unit": "one row per run; targets are keyed by subject (sub)", "frames": frames,
               "tr": repetition_time, "channels": n_channels, "spaces": list(EXPORTED_SPACES),
               "schaefer400_order": "7-network (Schaefer's 7Networks order)"}
    run_names = _run_names(dataset, files)
    with atomic_directory(output_dir, overwrite=True) as root:
        for space in EXPORTED_SPACES:
            channels = space_channels(space, n_channels)
            for part, members in runs.items():
                folder = root / f"{DATASET}.{space}.arrow" / SPLIT_FOLDERS[part]
                _write_split(folder, dataset, members, run_names, channels, repetition_time, frames)
            if log is not None:
                log(f"wrote {DATASET}.{space}.arrow: {sum(summary['runs'].values())} runs")
        (root / "targets").mkdir()
        for target, mapping in maps.items():
            target_map_path(root, target).write_text(json.dumps(mapping, indent=1, sort_keys=True))
        (root / "export.json").write_text(json.dumps(summary, indent=2, default=int))
    return summary


def _counts(split: dict, runs: dict, maps: dict) -> dict:
    """What ``export.json`` says of the parts (subjects, their ids, runs) and of each target map."""
    return {"subjects": {SPLIT_FOLDERS[part]: len(members) for part, members in split.items()},
            "split_subjects": {SPLIT_FOLDERS[part]: sorted(map(str, members)) for part, members in split.items()},
            "runs": {SPLIT_FOLDERS[part]: len(members) for part, members in runs.items()},
            "targets": {target: {"subjects": len(mapping),
                                 "counts": pd.Series(mapping).value_counts().sort_index().to_dict()}
                        for target, mapping in maps.items()}}


def _runs_by_part(dataset: ShardDataset, split: dict, frames: int) -> dict[str, list[int]]:
    """The dataset's runs of each part's subjects that have at least ``frames`` TRs."""
    part_of = {str(subject): part for part, members in split.items() for subject in members}
    runs = {part: [] for part in split}
    for run, (_, _, length, position) in enumerate(dataset.runs):
        if length >= frames:
            runs[part_of[dataset.subject_ids[position]]].append(run)
    return runs


ROOT_VARIABLE = "BRAINSCALE_ROOT"  # Brainmarks' <NAME>_ROOT convention for a dataset's location
DEFAULT_ROOT = "results/brainmarks"


def dataset_root() -> Path:
    """Where the plugin reads the export: ``$BRAINSCALE_ROOT``, else ``results/brainmarks`` (of the workflow folder)."""
    import os

    return Path(os.environ.get(ROOT_VARIABLE, DEFAULT_ROOT))


def exported_targets(root: str | Path) -> list[str]:
    """The targets an export holds (the ``<target>`` of every ``targets/brainscale_target_map_<target>.json``)."""
    prefix = f"{DATASET}_target_map_"
    return sorted(path.stem[len(prefix):] for path in Path(root).glob(f"targets/{prefix}*.json"))


def load_export(root: str | Path, target: str | None = None, space: str = "schaefer400_tians3_buckner7",
                **kwargs) -> dict:
    """Brainmarks' ``{train, validation, test}`` HFDatasets of an export, for one target and space.

    ``kwargs`` go to Brainmarks' ``load_arrow_dataset`` (e.g. ``cache_dir``).
    """
    from brainmarks.datasets.base import HFDataset, load_arrow_dataset

    root = Path(root)
    if not (root / "export.json").is_file():
        raise BrainmarksError(f"{root}: no brainscale export (export.json absent). Write one with "
                              f"`snakemake --cores all brainmarks_export`, or point ${ROOT_VARIABLE} at one.")
    targets = exported_targets(root)
    if target not in targets:
        raise BrainmarksError(f"{root}: no target '{target}'; the export has {', '.join(targets) or 'none'}. Use "
                              f"dataset brainscale_<target> (or dataset_kwargs.target) with one of them.")
    written = json.loads((root / "export.json").read_text())["spaces"]
    if space not in written:
        space_channels(space)  # a space we never write names its own fix
        raise BrainmarksError(f"{root}: the export holds the spaces {', '.join(written)}, not {space}. Use a model of "
                              "one of those spaces.")
    target_map = json.loads(target_map_path(root, target).read_text())
    folder = root / f"{DATASET}.{space}.arrow"
    return {split: HFDataset(load_arrow_dataset(folder / split, **kwargs), target_key="sub", target_map=target_map)
            for split in SPLIT_FOLDERS.values()}
