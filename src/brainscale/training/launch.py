"""One pretraining job: its run specification written beside the run, then training in this process,
or under torchrun with one process per GPU reading that same file."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np

from ..errors import TrainingError
from ..objectives import RunSpec
from ..objectives.spec import RUN_FILE
from .evaluation import run_evaluation_subjects
from .loop import pretrain

__all__ = ["torchrun_command", "launch_pretraining"]


def torchrun_command(run_file: str | Path, shard_folder: str | Path, subjects_file: str | Path,
                     output_dir: str | Path, processes: int, splits_dir: str | Path | None = None) -> list[str]:
    """The torchrun call that trains one subset data-parallel over ``processes`` processes."""
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(processes),
               "-m", "brainscale.cli", "pretrain", "--spec", str(run_file), "--shards", str(shard_folder),
               "--subjects", str(subjects_file), "--output", str(output_dir)]
    return command + (["--splits", str(splits_dir)] if splits_dir is not None else [])


def launch_pretraining(run: RunSpec, shard_folder: str | Path, subjects_file: str | Path,
                       output_dir: str | Path, *, processes: int = 1, splits_dir: str | Path | None = None,
                       log=print, log_file: str | Path | None = None, env: dict | None = None) -> None:
    """Pretrain one subset (the ``pretrain`` rule's job).

    Writes ``run`` to ``<output_dir>/run.yaml``. With ``processes`` > 1, runs torchrun with that many
    processes (one per GPU; gloo on CPU), which read that file, their output appended to
    ``log_file``; otherwise trains in this process. ``splits_dir`` (``results/splits``) gives the
    held-out loss its evaluation subjects (:mod:`.evaluation`).
    """
    output_dir = Path(output_dir)
    run_file = run.write(output_dir / RUN_FILE)
    if processes <= 1:
        pretrain(run, shard_folder, np.load(subjects_file).astype(str), output_dir,
                 evaluation_subjects=run_evaluation_subjects(run, splits_dir, log), log=log)
        return
    command = torchrun_command(run_file, shard_folder, subjects_file, output_dir, processes, splits_dir)
    log("running " + " ".join(command))
    with open(log_file or output_dir / "torchrun.log", "a") as output:
        result = subprocess.run(command, stdout=output, stderr=subprocess.STDOUT, env=env)
    if result.returncode != 0:
        raise TrainingError(f"torchrun with {processes} processes failed (exit {result.returncode}); its output "
                           f"is in {log_file or output_dir / 'torchrun.log'}")
