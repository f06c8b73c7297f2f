"""Benchmark: does the pretraining loop ever wait for its data?

Runs the real training loop (:func:`brainscale.training.loop.pretrain`: shards, DataLoader workers
drawing the views and masks, ``prepare``, bf16 step, EMA, checkpoints off) for each reader mode
(``preloaded``: the shards read into memory first; ``lazy``: every crop read from HDF5) and each
number of DataLoader workers, and reports what ``log.csv`` records for the steady-state window
(every step after the first; the first holds worker start-up): ``data_wait``, the share of the
window's wall time the training process spent waiting for the next batch, and samples/s. It also
counts the host syncs of a step on CUDA (``torch.cuda.set_sync_debug_mode``).

    python benchmarks/loader_wait.py --shards results/shards --model tiny --batch 32 --steps 12 --workers 0 2
    python benchmarks/loader_wait.py --shards results/shards --subset results/splits/pretrain_n-128_seed-0.npy \\
        --model base --batch 512 --steps 30 --workers 0 4 8 12 --device cuda --out results/gpu
"""

from __future__ import annotations

import argparse
import json
import tempfile
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from brainscale.config import validate_config
from brainscale.objectives import RunSpec, run_spec
from brainscale.shards.reader import shard_paths, subjects_from_shards
from brainscale.training.loop import pretrain


def settings_for(args, workers: int, preload: bool) -> RunSpec:
    section = dict(validate_config({})["pretrain"], objectives=[f"semantoks-{args.model}"], batch_size=args.batch,
                   device=args.device, num_workers=workers, preload=preload, monitor_every=args.steps,
                   budget=dict(unit="steps", total=args.steps, warmup=1, checkpoint_every=10**9),
                   options={"semantoks": {"network_decay": args.steps}})
    return run_spec(section, f"semantoks-{args.model}")


def measure(args, subjects: list[str], workers: int, preload: bool) -> dict:
    with tempfile.TemporaryDirectory() as folder:
        pretrain(settings_for(args, workers, preload), args.shards, subjects, Path(folder) / "run", log=lambda line: None)
        log = pd.read_csv(Path(folder) / "run" / "log.csv")
    steady = log[log["step"] >= 1]  # one window: steps 1 .. steps-1 (monitors at 0 and at the end)
    return {"reader": "preloaded" if preload else "lazy", "workers": workers, "steps": len(steady),
            "data_wait": float(steady["data_wait"].iloc[-1]), "samples_per_s": float(steady["samples_per_s"].iloc[-1])}


def count_syncs(args, subjects: list[str], steps: int) -> int:
    """Host syncs CUDA's sync debug mode warns about in a whole run of ``steps`` steps."""
    short = argparse.Namespace(**{**vars(args), "steps": steps})
    with warnings.catch_warnings(record=True) as caught, tempfile.TemporaryDirectory() as folder:
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")
        try:
            pretrain(settings_for(short, 0, True), args.shards, subjects, Path(folder) / "run", log=lambda line: None)
        finally:
            torch.cuda.set_sync_debug_mode("default")
    return sum("synchroniz" in str(w.message) for w in caught)


def syncs_per_step(args, subjects: list[str]) -> float:
    """Host syncs of one step: runs of 3 and 6 steps share the start, the monitors of their first and
    last step, the checkpoint and the export, so their difference is 3 steps' worth."""
    return (count_syncs(args, subjects, 6) - count_syncs(args, subjects, 3)) / 3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shards", type=Path, default=Path("results/shards"))
    parser.add_argument("--subset", type=Path, help="a pretraining subset (results/splits/pretrain_n-*.npy); "
                        "default: every subject in the shards")
    parser.add_argument("--model", default="tiny")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 2])
    parser.add_argument("--readers", nargs="+", choices=["preloaded", "lazy"], default=["preloaded", "lazy"])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    subjects = [str(s) for s in (np.load(args.subset).astype(str) if args.subset
                                 else subjects_from_shards(shard_paths(args.shards)).index)]
    print(f"semantoks-{args.model}, batch {args.batch}, {args.steps} steps, {len(subjects)} subjects in "
          f"{args.shards}, device {args.device}", flush=True)
    results = []
    for reader in args.readers:
        for workers in args.workers:
            results.append(measure(args, subjects, workers, reader == "preloaded"))
            r = results[-1]
            print(f"  {reader:9s} {workers:2d} workers: waited for data {r['data_wait']:6.1%} of the time, "
                  f"{r['samples_per_s']:8.1f} samples/s", flush=True)
    summary = {"model": args.model, "batch": args.batch, "device": args.device, "results": results}
    if args.device == "cuda":
        summary["host_syncs_per_step"] = syncs_per_step(args, subjects)
        print(f"  host syncs per step: {summary['host_syncs_per_step']:.1f}")
    if args.out is not None:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "loader_wait.json").write_text(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main()
