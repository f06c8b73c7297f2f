"""Write preprocessed runs into HDF5 shards in the Brain-Semantoks layout.

Each shard holds, for N runs (rows) of T time points (NaN-padded at the end to the
shard's longest run):

- ``timeseries/schaefer400`` (N, 400, T), ``timeseries/tian3`` (N, 50, T), ``timeseries/buckner7`` (N, 7, T)
- ``long_subject_id`` (N,) bytes (runs of one subject share it), ``ts_len`` (N,) int32
- one dataset per configured label at the top level (e.g. ``sex_bi``, ``age``), NaN where unknown
- extras the reference ignores: ``run_id`` (N,) bytes, ``channel_missing`` (N, 457) bool

Time series are chunked one run per chunk, so reading a run touches one chunk of each
dataset. Beside the shards: ``network_mapping.npz`` and ``manifest.json`` (shards, rows,
subjects, SHA-256 of every file, label counts, the configuration used).
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import h5py
import numpy as np
import pandas as pd

from ..errors import BrainscaleError
from ..io import atomic_directory

__all__ = ["GROUPS", "ShardError", "sha256_of", "encode_labels", "write_shards", "MANIFEST"]

#: (dataset name, number of channels) in channel order.
GROUPS = (("schaefer400", 400), ("tian3", 50), ("buckner7", 7))
MANIFEST = "manifest.json"


class ShardError(BrainscaleError, ValueError):
    """Runs cannot be sharded as they are (the message names the file and the fix)."""


def sha256_of(path: str | Path, block: int = 1 << 22) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(block), b""):
            digest.update(chunk)
    return digest.hexdigest()


def encode_labels(phenotypes: pd.DataFrame, labels: dict) -> pd.DataFrame:
    """Numeric label columns from phenotypes: ``{name: {"phenotype": column, "map": {...}}}``.

    An unknown phenotype is an error; a value absent from a map, or missing, becomes NaN.
    """
    encoded = pd.DataFrame(index=phenotypes.index)
    for name, spec in labels.items():
        column = spec["phenotype"]
        if column not in phenotypes.columns:
            raise ShardError(f"shards.labels.{name}: phenotype '{column}' is not among the collected phenotypes "
                             f"({', '.join(phenotypes.columns)}). Add it to data.phenotypes or fix the label.")
        values = phenotypes[column]
        if "map" in spec:
            encoded[name] = values.astype("string").map(spec["map"]).astype(float)
        else:
            encoded[name] = pd.to_numeric(values, errors="coerce").astype(float)
    return encoded


def _read_run(path: Path) -> dict:
    with np.load(path) as archive:
        return {"timeseries": archive["timeseries"], "channel_missing": archive["channel_missing"],
                "participant_id": str(archive["participant_id"]), "run_id": str(archive["run_id"])}


def _write_one_shard(path: Path, runs: list[dict], labels: pd.DataFrame, settings: dict) -> None:
    n_rows = len(runs)
    length = max(run["timeseries"].shape[1] for run in runs)
    dtype = np.dtype(settings["dtype"])
    compression = None if settings["compression"] == "none" else settings["compression"]
    options = {"compression_opts": settings["compression_level"]} if compression == "gzip" else {}
    with h5py.File(path, "w") as shard:
        offset = 0
        for name, n_channels in GROUPS:
            dataset = shard.create_dataset(f"timeseries/{name}", shape=(n_rows, n_channels, length), dtype=dtype,
                                           chunks=(1, n_channels, length), compression=compression, **options)
            for row, run in enumerate(runs):
                block = np.full((n_channels, length), np.nan, dtype=dtype)
                values = run["timeseries"][offset:offset + n_channels]
                block[:, : values.shape[1]] = values
                dataset[row] = block
            offset += n_channels
        shard.create_dataset("long_subject_id", data=np.array([r["participant_id"] for r in runs], dtype="S"))
        shard.create_dataset("run_id", data=np.array([r["run_id"] for r in runs], dtype="S"))
        shard.create_dataset("ts_len", data=np.array([r["timeseries"].shape[1] for r in runs], dtype=np.int32))
        shard.create_dataset("channel_missing", data=np.stack([r["channel_missing"] for r in runs]))
        # Preprocessed runs are finite up to their length: readers may trust ts_len without scanning.
        shard.attrs["ts_len_is_nan_free"] = True
        for name in labels.columns:
            values = [labels[name].get(r["participant_id"], np.nan) for r in runs]
            shard.create_dataset(name, data=np.asarray(values, dtype=np.float64))


def write_shards(run_files: list[str | Path], phenotypes: pd.DataFrame, network_mapping: str | Path,
                 settings: dict, output_dir: str | Path, *, config: dict | None = None, log=print) -> dict:
    """Write the runs into bounded shards with a manifest (the folder is replaced atomically).

    Parameters
    ----------
    run_files : list of paths
        Per-run ``.npz`` files of the preprocessing stage.
    phenotypes : pandas.DataFrame
        Indexed by participant_id (``results/preprocess/phenotypes.tsv``).
    network_mapping : path
        Copied beside the shards.
    settings : dict
        The ``shards`` config section.
    output_dir : path
    config : dict, optional
        The configuration that shaped the shards, recorded in the manifest.

    Returns
    -------
    dict
        The manifest.
    """
    if not run_files:
        raise ShardError("no preprocessed run to shard: every run was excluded. See results/qc/runs.tsv.")
    labels = encode_labels(phenotypes, settings["labels"])
    runs = [_read_run(Path(p)) for p in run_files]
    counts = {run["timeseries"].shape[0] for run in runs}
    expected = sum(n for _, n in GROUPS)
    if counts != {expected}:
        odd = next(Path(p) for p, r in zip(run_files, runs) if r["timeseries"].shape[0] != expected)
        raise ShardError(f"{odd}: runs have {sorted(counts)} channels, expected {expected} (400 + 50 + 7). "
                         "Preprocess every run with the same three atlases.")
    runs.sort(key=lambda r: (r["participant_id"], r["run_id"]))  # a subject's runs stay together
    size = settings["max_runs_per_shard"]
    manifest = {"shards": [], "n_runs": len(runs), "n_subjects": len({r["participant_id"] for r in runs}),
                "channels": {name: n for name, n in GROUPS}, "dtype": settings["dtype"],
                "labels": {}, "config": config or {"shards": settings}}
    with atomic_directory(output_dir, overwrite=True) as folder:
        for index, start in enumerate(range(0, len(runs), size)):
            chunk = runs[start:start + size]
            name = f"shard-{index:05d}.h5"
            _write_one_shard(folder / name, chunk, labels, settings)
            manifest["shards"].append({"file": name, "rows": len(chunk),
                                       "subjects": len({r["participant_id"] for r in chunk}),
                                       "sha256": sha256_of(folder / name)})
            log(f"{name}: {len(chunk)} runs")
        shutil.copy(network_mapping, folder / "network_mapping.npz")
        manifest["network_mapping_sha256"] = sha256_of(folder / "network_mapping.npz")
        for name in labels.columns:
            per_run = [labels[name].get(r["participant_id"], np.nan) for r in runs]
            manifest["labels"][name] = {"runs_with_label": int(np.isfinite(per_run).sum()),
                                        "runs_missing_label": int((~np.isfinite(per_run)).sum())}
        (folder / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=True, default=str) + "\n")
    return manifest
