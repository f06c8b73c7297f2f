"""Benchmark: time to generate the demo's synthetic fMRIPrep derivatives.

Generates the dataset of a config (default: config/config.yaml) once per worker
count and reports wall time, runs per second, size on disk and the speed-up over
the single-process run measured in the same invocation (the baseline).

With ``--baseline-commit C`` the baseline is instead the simulator of commit ``C``
(checked out with ``git worktree`` into a scratch folder); both it and this
checkout run through the CLI in a subprocess with the same settings and worker
count, so a change of the simulator is timed against what it replaced on the
same machine in the same invocation.

    python benchmarks/simulate_dataset.py --jobs 1 2
    python benchmarks/simulate_dataset.py --jobs 2 --baseline-commit 502dc72
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from brainscale.config import load_config
from brainscale.simulate import simulate_dataset

REPO = Path(__file__).resolve().parents[1]


def folder_size_mb(folder: Path) -> float:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file()) / 1e6


def time_cli(tree: Path, config: str, jobs: int, target: Path) -> tuple[float, float]:
    """Wall time (process start included) and size (MB) of ``brainscale simulate`` from the source in ``tree``."""
    env = dict(os.environ, PYTHONPATH=str(tree / "src"))
    started = time.perf_counter()
    subprocess.run([sys.executable, "-m", "brainscale.cli", "simulate", "--config", config, "--output",
                    str(target), "--jobs", str(jobs)], check=True, env=env, capture_output=True, cwd=tree)
    seconds = time.perf_counter() - started
    size = folder_size_mb(target)
    shutil.rmtree(target)
    return seconds, size


def compare_with_commit(commit: str, config: str, jobs_list: list[int], scratch: Path) -> None:
    """Time the simulator of ``commit`` (a git worktree) and of this checkout, alternately, through the CLI."""
    tree = scratch / f"tree-{commit}"
    subprocess.run(["git", "-C", str(REPO), "worktree", "add", "--detach", str(tree), commit], check=True,
                   capture_output=True)
    try:
        for jobs in jobs_list:
            old, old_size = time_cli(tree, config, jobs, scratch / "old")
            new, new_size = time_cli(REPO, config, jobs, scratch / "new")
            print(f"n_jobs={jobs}: commit {commit} {old:6.1f} s ({old_size:.0f} MB), this checkout {new:6.1f} s "
                  f"({new_size:.0f} MB): speed-up x{old / new:.2f}")
    finally:
        subprocess.run(["git", "-C", str(REPO), "worktree", "remove", "--force", str(tree)], check=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default=str(REPO / "config" / "config.yaml"))
    parser.add_argument("--jobs", type=int, nargs="+", default=[1, 2], help="worker counts; the first is the baseline")
    parser.add_argument("--baseline-commit", help="time this commit's simulator first, as the baseline of every count")
    args = parser.parse_args()
    settings = load_config(args.config)["simulate"]
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores; "
          f"{settings['n_subjects']} subjects at {settings['resolution_mm']} mm")
    with tempfile.TemporaryDirectory() as scratch:
        if args.baseline_commit:
            compare_with_commit(args.baseline_commit, args.config, args.jobs, Path(scratch))
            return
        baseline = None
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
