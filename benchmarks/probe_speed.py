"""Time one probe job (rule probe's work on one feature file) with this checkout and with a baseline checkout.

Each checkout runs in its own Python process (``PYTHONPATH=<checkout>/src``) on the same inputs and the
demo config's probe settings, best of ``--repeat``; the ratio is baseline / this. Make the baseline
with ``git worktree add /tmp/baseline <commit>``.

    python benchmarks/probe_speed.py --baseline /tmp/baseline \
        results/embeddings/pretrain/semantoks-tiny/n-8_seed-0/features.h5 results/shards \
        resources/synthetic/ground_truth/latents.tsv
"""

import argparse
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

ONE_JOB = """
import sys, time
from brainscale.config import load_config
from brainscale.probing.probes import run_probe_rule
config = load_config(sys.argv[1])
keys = ("tasks", "split_seeds", "strengths", "layers", "cv_folds", "subject_reid", "selection")
settings = {key: config["probe"][key] for key in keys if key in config["probe"]}
start = time.perf_counter()
metrics = run_probe_rule(sys.argv[2], sys.argv[3], settings, config["shards"]["labels"],
                         config["splits"]["probe_proportions"], sys.argv[5] + "/metrics.tsv",
                         sys.argv[5] + "/predictions.tsv.gz", latents=sys.argv[4] or None)
print(time.perf_counter() - start, len(metrics))
"""


def time_checkout(checkout: Path, args, output: Path) -> tuple[float, int]:
    output.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "PYTHONPATH": str(checkout / "src"), "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1",
           "MKL_NUM_THREADS": "1"}
    best = None
    for _ in range(args.repeat):
        result = subprocess.run([sys.executable, "-c", ONE_JOB, str(checkout / "config" / "config.yaml"),
                                 args.features, args.shards, args.latents or "", str(output)],
                                capture_output=True, text=True, env=env, check=True)
        seconds, rows = result.stdout.split()[-2:]
        best = min(best or float("inf"), float(seconds))
    return best, int(rows)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("features")
    parser.add_argument("shards")
    parser.add_argument("latents", nargs="?")
    parser.add_argument("--baseline", required=True, type=Path, help="another checkout of brainscale")
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--scratch", type=Path, default=Path("/tmp/probe_speed"))
    args = parser.parse_args()
    baseline, baseline_rows = time_checkout(args.baseline, args, args.scratch / "baseline")
    current, rows = time_checkout(REPO, args, args.scratch / "current")
    print(f"one probe job, {rows} metric rows (baseline {baseline_rows}), one thread, best of {args.repeat}")
    print(f"baseline {args.baseline}: {baseline:.1f} s")
    print(f"this checkout: {current:.1f} s  (x{baseline / current:.2f})")


if __name__ == "__main__":
    main()
