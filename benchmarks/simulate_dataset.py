"""Benchmark: time to generate the demo's synthetic fMRIPrep derivatives.

Generates the dataset of a config (default: config/config.yaml) once per worker
count and reports wall time, runs per second, size on disk and the speed-up over
the single-process run measured in the same invocation (the baseline).

    python benchmarks/simulate_dataset.py --jobs 1 2
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import tempfile
import time
from pathlib import Path

from brainscale.config import load_config
from brainscale.simulate import simulate_dataset

REPO = Path(__file__).resolve().parents[1]


def folder_size_mb(folder: Path) -> float:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file()) / 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default=str(REPO / "config" / "config.yaml"))
    parser.add_argument("--jobs", type=int, nargs="+", default=[1, 2], help="worker counts; the first is the baseline")
    args = parser.parse_args()
    settings = load_config(args.config)["simulate"]
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores; "
          f"{settings['n_subjects']} subjects at {settings['resolution_mm']} mm")
    baseline = None
    with tempfile.TemporaryDirectory() as scratch:
        for jobs in args.jobs:
            target = Path(scratch) / f"jobs{jobs}"
            started = time.perf_counter()
            runs = simulate_dataset(settings, target, n_jobs=jobs, log=lambda line: None)
            seconds = time.perf_counter() - started
            baseline = baseline or seconds
            print(f"n_jobs={jobs}: {seconds:6.1f} s, {len(runs)} runs, {len(runs) / seconds:5.2f} runs/s, "
                  f"{folder_size_mb(target):6.0f} MB, speed-up x{baseline / seconds:.2f} vs n_jobs={args.jobs[0]}")
            shutil.rmtree(target)


if __name__ == "__main__":
    main()
