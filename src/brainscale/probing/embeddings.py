"""Frozen-encoder features of the probe subjects, cached on disk.

Protocol (the reference's evaluation): every run gives ``n_crops`` crops at evenly spaced starts,
``linspace(0, T - crop_length, n_crops)`` rounded; each crop is one row. Per transformer layer
(through the final LayerNorm) a row holds the CLS token and the mean of the patch tokens (for an
encoder without CLS, such as Brain-JEPA's, the token mean twice); the probing feature ``cls_avg`` is
their concatenation, mean first. The last layer's features are the encoder's output features.

Speed on CPU comes from reading each run once and cutting its crops in memory, and from
encoding a crop only once when several starts coincide (runs shorter than a crop plus the
number of crops); the features do not change.

A feature file is HDF5: ``subject`` (rows,), optional ``run_id`` and ``start`` (rows,), and
``features/<name>`` (rows, layers, dim) float32; attributes say where the features come from.
Baselines use the same layout with one layer: functional connectivity one row per run (with
``run_id``, which ``subject_reid`` needs), the simulator's latents one row per subject.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import h5py
import numpy as np
import torch

from ..io import atomic_file
from ..objectives.base import token_features
from ..shards.reader import ShardDataset, pad_crop
from ..shards.splits import probe_subjects

__all__ = ["FEATURE_FORMAT", "FeatureTable", "write_features", "read_features", "extract_embeddings",
           "embedding_key", "cached", "probe_subjects", "probe_dataset", "embedding_device", "embed_checkpoint"]

FEATURE_FORMAT = "brainscale-features-1"


@dataclass
class FeatureTable:
    """Rows of features with the subject each row belongs to."""

    subjects: np.ndarray
    features: dict[str, np.ndarray]
    extra: dict[str, np.ndarray] = field(default_factory=dict)
    attrs: dict = field(default_factory=dict)

    def matrix(self, name: str, layer: int = -1) -> np.ndarray:
        """(rows, dim) features of one kind at one layer; ``cls_avg`` is [mean, cls]."""
        if name == "cls_avg" and "cls_avg" not in self.features:
            return np.concatenate([self.features["mean"][:, layer], self.features["cls"][:, layer]], axis=1)
        return self.features[name][:, layer]

    @property
    def names(self) -> list[str]:
        names = list(self.features)
        return names + ["cls_avg"] if {"cls", "mean"} <= set(names) else names

    @property
    def n_layers(self) -> int:
        return min(array.shape[1] for array in self.features.values())


def write_features(path: str | Path, table: FeatureTable) -> None:
    """Write a feature table atomically (see the module docstring for the layout)."""
    with atomic_file(path) as temporary, h5py.File(temporary, "w") as output:
        output.attrs["format"] = FEATURE_FORMAT
        for key, value in table.attrs.items():
            output.attrs[key] = value
        output.create_dataset("subject", data=np.asarray(table.subjects, dtype="S"))
        for key, values in table.extra.items():
            output.create_dataset(key, data=values)
        for name, values in table.features.items():
            output.create_dataset(f"features/{name}", data=np.asarray(values, dtype=np.float32))


def read_features(path: str | Path) -> FeatureTable:
    """Read a feature table written by :func:`write_features`."""
    with h5py.File(path, "r") as source:
        if source.attrs.get("format") != FEATURE_FORMAT:
            raise ValueError(f"{path}: not a brainscale feature file ({FEATURE_FORMAT}); rerun its embed rule.")
        features = {name: source[f"features/{name}"][:] for name in source["features"]}
        extra = {key: source[key][:] for key in ("run_id", "start") if key in source}
        return FeatureTable(source["subject"][:].astype(str), features, extra, dict(source.attrs))


@torch.inference_mode()
def extract_embeddings(encoder, dataset: ShardDataset, *, batch_size: int = 64, device: str = "cpu",
                       log=None) -> FeatureTable:
    """Per-layer CLS and token-mean features of every evaluation crop of ``dataset``.

    Parameters
    ----------
    encoder : torch.nn.Module
        An encoder of any objective (see :mod:`brainscale.objectives.base`), in eval mode; its
        crop length is the dataset's. An encoder without CLS gives its token mean as ``cls``.
    dataset : ShardDataset
        Built with ``crops="eval"``; its ``n_eval_crops`` crops per run are encoded.
    batch_size : int, default=64
        Crops per forward pass.
    device : str, default="cpu"

    Returns
    -------
    FeatureTable with ``cls`` and ``mean`` of shape (runs * n_crops, depth, width).
    """
    if dataset.crop_length != encoder.config.crop_length:
        raise ValueError(f"the dataset's crops are {dataset.crop_length} samples, the encoder's "
                         f"{encoder.config.crop_length}")
    encoder = encoder.to(device).eval()
    depth, width = encoder.config.depth, encoder.config.width
    rows, starts, unique_of_row = [], [], []
    unique = []  # (run, start) encoded once each
    for run, (_, _, length, _) in enumerate(dataset.runs):
        run_starts = [int(s) for s in dataset.eval_starts(length)]
        first = {}
        for start in run_starts:
            if start not in first:
                first[start] = len(unique)
                unique.append((run, start))
            rows.append(run)
            starts.append(start)
            unique_of_row.append(first[start])
    cls = np.empty((len(unique), depth, width), dtype=np.float32)
    mean = np.empty_like(cls)
    cached_run, cached_data = -1, None
    for begin in range(0, len(unique), batch_size):
        chunk = unique[begin:begin + batch_size]
        crops, missing = [], []
        for run, start in chunk:
            if run != cached_run:  # each run is read once: its crops are consecutive
                cached_run, cached_data = run, dataset.read_run(run)
            crops.append(pad_crop(cached_data[0][:, start:start + dataset.crop_length], dataset.crop_length))
            missing.append(cached_data[1])
        x = torch.from_numpy(np.stack(crops)).to(device)
        absent = torch.from_numpy(np.stack(missing)).to(device)
        for layer, tokens in enumerate(encoder.layer_outputs(x, missing_channels=absent)):
            summary, average = token_features(encoder, tokens)
            cls[begin:begin + len(chunk), layer] = summary.float().cpu().numpy()
            mean[begin:begin + len(chunk), layer] = average.float().cpu().numpy()
        if log is not None:
            log(f"encoded {min(begin + batch_size, len(unique))}/{len(unique)} distinct crops")
    index = np.asarray(unique_of_row)
    subjects = np.asarray([dataset.subject_ids[dataset.runs[run][3]] for run in rows])
    run_ids = np.asarray(rows, dtype=np.int64)
    return FeatureTable(subjects, {"cls": cls[index], "mean": mean[index]},
                        {"run_id": run_ids, "start": np.asarray(starts, dtype=np.int64)})


def embedding_key(checkpoint_sha256: str, manifest_sha256: str, subjects, settings: dict) -> str:
    """The cache key of a feature file: checkpoint bytes, shard manifest, subjects and crop settings."""
    payload = json.dumps({"format": FEATURE_FORMAT, "checkpoint": checkpoint_sha256, "data": manifest_sha256,
                          "subjects": sorted(map(str, subjects)), "settings": settings}, sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()[:32]


def cached(key: str, cache_dir: str | Path, output: str | Path, compute) -> bool:
    """Place the feature file of ``key`` at ``output``, computing it with ``compute()`` only on a miss.

    ``compute`` returns a :class:`FeatureTable`; it is stored as ``<cache_dir>/<key>.h5`` and
    ``output`` becomes a hard link to it (a copy where links are impossible). Returns True on a hit.
    """
    entry = Path(cache_dir) / f"{key}.h5"
    hit = entry.is_file()
    if not hit:
        table = compute()
        table.attrs["cache_key"] = key
        write_features(entry, table)
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    with atomic_file(output) as temporary:
        try:
            os.link(entry, temporary)
        except OSError:
            shutil.copyfile(entry, temporary)
    return hit


def embedding_device(setting: str) -> str:
    """``embed.device``: cpu, cuda, or auto (cuda when a GPU is visible)."""
    if setting == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return setting


def probe_dataset(shard_folder: str | Path, splits_dir: str | Path, *, crop_length: int = 100,
                  n_crops: int = 8) -> ShardDataset:
    """Evaluation crops of the probe subjects, read lazily from the shards (checked against the manifest)."""
    from ..shards.reader import shard_paths

    return ShardDataset(shard_paths(shard_folder), probe_subjects(splits_dir), crop_length=crop_length,
                        crops="eval", n_eval_crops=n_crops)


def embed_checkpoint(checkpoint_path: str | Path | None, shard_folder: str | Path, splits_dir: str | Path,
                     output: str | Path, settings: dict, *, checkpoint: dict | None = None, name: str | None = None,
                     log=None) -> bool:
    """Features of the probe subjects for one checkpoint, through the cache (rule ``embed``).

    Parameters
    ----------
    checkpoint_path : str or Path
    shard_folder, splits_dir : str or Path
        ``results/shards`` (with its manifest) and ``results/splits``.
    output : str or Path
        The feature file to place.
    settings : dict
        The ``embed`` config section (n_crops, batch_size, device, cache_dir).
    checkpoint : dict, optional
        How to read the checkpoint: ``format`` and, for reference checkpoints, ``model`` and
        ``architecture`` (see :func:`brainscale.probing.checkpoints.load_checkpoint`). Format
        ``brainmarks`` names a Brainmarks ``model`` (with its ``model_kwargs`` and the shards'
        ``repetition_time``) instead of a file (:func:`brainscale.brainmarks.features.embed_brainmarks_model`).

    Returns
    -------
    bool
        True when the features came from the cache.
    """
    from ..shards.writer import MANIFEST, sha256_of
    from ..objectives.base import network_map_of
    from .checkpoints import load_checkpoint

    checkpoint = dict(checkpoint or {"format": "brainscale"})
    if checkpoint["format"] == "brainmarks":
        from ..brainmarks.features import embed_brainmarks_model

        return embed_brainmarks_model(checkpoint, shard_folder, splits_dir, output, settings,
                                      repetition_time=checkpoint.get("repetition_time", 2.0), name=name, log=log)
    subjects = probe_subjects(splits_dir)
    checkpoint_sha = sha256_of(checkpoint_path)
    manifest_sha = sha256_of(Path(shard_folder) / MANIFEST)
    key = embedding_key(checkpoint_sha, manifest_sha, subjects,
                        {"n_crops": settings["n_crops"], "reader": checkpoint})

    def compute() -> FeatureTable:
        encoder = load_checkpoint(checkpoint_path, network_map_of(shard_folder), format=checkpoint["format"],
                                  settings=checkpoint, name=name)
        dataset = probe_dataset(shard_folder, splits_dir, crop_length=encoder.config.crop_length,
                                n_crops=settings["n_crops"])
        table = extract_embeddings(encoder, dataset, batch_size=settings["batch_size"],
                                   device=embedding_device(settings["device"]), log=log)
        table.attrs.update({"checkpoint": str(checkpoint_path), "checkpoint_sha256": checkpoint_sha,
                            "manifest_sha256": manifest_sha, "source": name or ""})
        return table

    return cached(key, settings["cache_dir"], output, compute)
