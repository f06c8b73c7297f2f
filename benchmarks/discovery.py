"""Benchmark: run discovery and ``snakemake -n`` on a UK Biobank-sized listing.

Builds an fMRIPrep-like tree of empty files for N runs (default 40,000: 20,000 subjects with
two sessions; bold, sidecar, mask, confounds TSV and JSON per run), then times
  find_runs      brainscale's discovery on that tree;
  os.walk        a plain listing of the same tree (the baseline);
  snakemake -n   the whole workflow's dry run on it (simulate off, runs_per_job from --runs-per-job,
                 pretraining at --sizes x --seeds, then embedding, probes and figures).

    python benchmarks/discovery.py --runs 40000 --runs-per-job 200 --sizes 20 200 2000 6000 12000 --seeds 0 1 2

With ``--hide-slurm-client`` the dry run also runs with a PATH that lacks the Slurm client commands:
on a machine that has them but no reachable controller (a CI runner, this project's build machine),
importing the Slurm executor plugin, which every ``snakemake`` start does, waits for ``sacct`` and
``scontrol`` to time out; on a login node they answer at once.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

from brainscale.config import resolve_inputs, validate_config
from brainscale.preprocessing.discovery import find_runs

REPO = Path(__file__).resolve().parents[1]
SPACE = "MNI152NLin2009cAsym"


def build_listing(root: Path, n_runs: int) -> None:
    root.mkdir(parents=True)
    (root / "dataset_description.json").write_text('{"Name": "listing", "BIDSVersion": "1.9.0", '
                                                   '"DatasetType": "derivative"}')
    lines = ["participant_id\tage\tsex\tfluid_intelligence"]
    for index in range(n_runs // 2):
        subject = f"sub-{index:06d}"
        lines.append(f"{subject}\t50\tF\t100")
        for session in ("1", "2"):
            func = root / subject / f"ses-{session}" / "func"
            func.mkdir(parents=True)
            stem = f"{subject}_ses-{session}_task-rest"
            for name in (f"{stem}_space-{SPACE}_res-2_desc-preproc_bold.nii.gz",
                         f"{stem}_space-{SPACE}_res-2_desc-preproc_bold.json",
                         f"{stem}_space-{SPACE}_res-2_desc-brain_mask.nii.gz",
                         f"{stem}_desc-confounds_timeseries.tsv", f"{stem}_desc-confounds_timeseries.json"):
                (func / name).touch()
    (root / "participants.tsv").write_text("\n".join(lines) + "\n")


SLURM_CLIENT = {"sinfo", "sacct", "squeue", "scontrol", "sbatch", "srun", "scancel", "sacctmgr", "sshare", "sstat",
                "sprio", "sreport", "sdiag", "strigger", "sattach", "salloc", "sbcast", "scrontab", "sview"}


def path_without_slurm(folder: Path) -> str:
    """A PATH of links to every command on this PATH but the Slurm client's (first one of a name wins)."""
    folder.mkdir()
    for directory in os.environ["PATH"].split(os.pathsep):
        if not os.path.isdir(directory):
            continue
        for name in os.listdir(directory):
            link = folder / name
            if name not in SLURM_CLIENT and not name.startswith("slurm") and not link.exists():
                link.symlink_to(os.path.join(directory, name))
    return str(folder)


def dry_run(configfile: Path, cwd: str, env: dict) -> tuple[str, str]:
    """(jobs, time and memory line) of ``snakemake -n`` of the whole workflow."""
    command = ["/usr/bin/time", "-f", "%e s wall, %M KB peak", sys.executable, "-m", "snakemake", "-n",
               "--cores", "8", "-s", str(REPO / "Snakefile"), "--configfile", str(configfile)]
    result = subprocess.run(command, cwd=cwd, capture_output=True, text=True, env=env)
    if result.returncode != 0:
        sys.exit(result.stdout + result.stderr)
    total = next((line.split()[-1] for line in result.stdout.splitlines() if line.startswith("total")), "?")
    return total, result.stderr.strip().splitlines()[-1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=40000)
    parser.add_argument("--runs-per-job", type=int, default=200)
    parser.add_argument("--sizes", type=int, nargs="+", default=[20, 200, 2000, 6000, 12000])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--hide-slurm-client", action="store_true",
                        help="also time the dry run without the Slurm client commands on PATH")
    args = parser.parse_args()
    demo_atlases = resolve_inputs(validate_config({}))["atlases"]
    missing = [p for spec in demo_atlases.values() for p in spec.values() if not Path(p).is_file()]
    if missing:
        sys.exit(f"run `snakemake --cores 2 simulate_derivatives` first: the demo atlases are needed ({missing[0]})")
    with tempfile.TemporaryDirectory() as scratch:
        root = Path(scratch) / "fmriprep"
        started = time.perf_counter()
        build_listing(root, args.runs)
        print(f"built a listing of {args.runs} runs in {time.perf_counter() - started:.1f} s")

        started = time.perf_counter()
        count = sum(len(files) for _, _, files in os.walk(root))
        walk = time.perf_counter() - started
        started = time.perf_counter()
        runs = find_runs(root, space=SPACE, task="rest")
        discovery = time.perf_counter() - started
        assert len(runs) == args.runs
        print(f"os.walk of {count} files: {walk:.2f} s; find_runs: {discovery:.2f} s "
              f"(x{discovery / walk:.2f} of os.walk)")

        config = {"simulate": {"enabled": False},
                  "data": {"derivatives": str(root), "res": "2"},
                  "atlases": {k: {"image": str(REPO / v["image"]), "labels": str(REPO / v["labels"])}
                              for k, v in demo_atlases.items()},
                  "preprocess": {"runs_per_job": args.runs_per_job},
                  "splits": {"pretrain_sizes": args.sizes, "pretrain_seeds": args.seeds}}
        configfile = Path(scratch) / "config.yaml"
        configfile.write_text(yaml.safe_dump(config))
        jobs = args.runs // args.runs_per_job + (args.runs % args.runs_per_job > 0)
        environments = {"": dict(os.environ)}
        if args.hide_slurm_client:
            environments[", without the Slurm client on PATH"] = dict(
                os.environ, PATH=path_without_slurm(Path(scratch) / "bin"))
        for label, env in environments.items():
            total, measured = dry_run(configfile, scratch, env)
            print(f"snakemake -n ({total} jobs: {jobs} preprocessing jobs of {args.runs_per_job} runs, "
                  f"{len(args.sizes) * len(args.seeds)} pretraining jobs per objective{label}): {measured}")


if __name__ == "__main__":
    main()
