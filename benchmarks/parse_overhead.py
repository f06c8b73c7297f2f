"""Benchmark: what every Snakemake invocation pays before any job runs (the parse), and how much of it
was torch.

Each Slurm job and each test that runs Snakemake parses the whole workflow again (config validation,
the objectives' checks). For each source tree given (this checkout and, for a ratio, an older one:
``git worktree add /tmp/before <commit>``), in alternation, ``--repeats`` times:

  snakemake -n     a dry run of the demo config in an empty folder (it stops at the simulation
                   checkpoint: the parse, the config checks and the DAG of the first stage);
  torch imported   whether that dry run imported torch (checked in the same process at exit);
  import torch     ``python -c "import torch"``, the cost torch adds to a parse that imports it.

Every dry run is timed twice: as the machine is, and without the Slurm client commands on PATH
(``benchmarks/discovery.py``, ``--hide-slurm-client``: on a machine that has them but no reachable
controller, every ``snakemake`` start waits for them in the Slurm executor plugin's import).

    python benchmarks/parse_overhead.py --trees /tmp/before . --repeats 5
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from discovery import path_without_slurm  # benchmarks/discovery.py

DRY_RUN = """
import atexit, sys
atexit.register(lambda: print("TORCH" if "torch" in sys.modules else "NO-TORCH", file=sys.stderr))
from snakemake.cli import main
sys.argv = ["snakemake", "-n", "-q", "-s", {snakefile!r}, "--cores", "1"]
main()
"""


def timed(command: list[str], *, cwd: str, env: dict) -> tuple[float, subprocess.CompletedProcess]:
    started = time.perf_counter()
    result = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True)
    return time.perf_counter() - started, result


def measure(tree: Path, path: str) -> dict:
    """One dry run of the demo config with ``tree``'s code and Snakefile, and ``path`` as PATH."""
    env = {**os.environ, "PYTHONPATH": str(tree / "src"), "PATH": path}
    with tempfile.TemporaryDirectory() as folder:
        code = DRY_RUN.format(snakefile=str(tree / "Snakefile"))
        seconds, result = timed([sys.executable, "-c", code], cwd=folder, env=env)
    if result.returncode != 0:
        sys.exit(f"{tree}: the dry run failed:\n{result.stderr[-3000:]}")
    return {"dry_run_s": seconds, "torch": result.stderr.strip().splitlines()[-1] == "TORCH"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trees", nargs="+", default=["."], help="source trees (repository roots) to compare")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    trees = [Path(tree).resolve() for tree in args.trees]
    with tempfile.TemporaryDirectory() as scratch:
        paths = {"": os.environ["PATH"], ", no Slurm client": path_without_slurm(Path(scratch) / "bin")}
        runs = {(tree, label): [] for tree in trees for label in paths}
        for _ in range(args.repeats):
            for tree in trees:  # alternate, so that a slow moment of the machine hits every tree
                for label, path in paths.items():
                    runs[tree, label].append(measure(tree, path))
    torch_seconds = [timed([sys.executable, "-c", "import torch"], cwd=".", env=dict(os.environ))[0]
                     for _ in range(args.repeats)]
    print(f"import torch: median {statistics.median(torch_seconds):.2f} s over {args.repeats}")
    for label in paths:
        baseline = statistics.median(r["dry_run_s"] for r in runs[trees[0], label])
        for tree in trees:
            seconds = statistics.median(r["dry_run_s"] for r in runs[tree, label])
            print(f"{tree}{label}: snakemake -n median {seconds:.2f} s (x{seconds / baseline:.2f} of the first "
                  f"tree), torch imported: {runs[tree, label][0]['torch']}")


if __name__ == "__main__":
    main()
