"""One pretraining job: in this process, or under torchrun with one process per GPU."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import yaml

from .loop import pretrain

__all__ = ["torchrun_command", "launch_pretraining"]


def torchrun_command(settings_file: str | Path, shard_folder: str | Path, subjects_file: str | Path,
                     output_dir: str | Path, processes: int, run: str = "semantoks-tiny") -> list[str]:
    """The torchrun call that trains one subset data-parallel over ``processes`` processes."""
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(processes),
            "-m", "brainscale.cli", "pretrain", "--config", str(settings_file), "--shards", str(shard_folder),
            "--subjects", str(subjects_file), "--output", str(output_dir), "--objective", run]


def launch_pretraining(settings: dict, shard_folder: str | Path, subjects_file: str | Path,
                       output_dir: str | Path, *, processes: int = 1, log=print, log_file: str | Path | None = None,
                       env: dict | None = None) -> None:
    """Pretrain one subset (the ``pretrain`` rule's job).

    With ``processes`` > 1, runs torchrun with that many processes (one per GPU; gloo on CPU),
    the settings passed through ``<output_dir>/settings.yaml``, their output appended to
    ``log_file``; otherwise trains in this process.
    """
    output_dir = Path(output_dir)
    if processes <= 1:
        pretrain(settings, shard_folder, np.load(subjects_file).astype(str), output_dir, log=log)
        return
    output_dir.mkdir(parents=True, exist_ok=True)
    settings_file = output_dir / "settings.yaml"
    # the config section without the run's own keys; --run names the run again
    section = {key: value for key, value in settings.items() if key not in ("objective", "model")}
    settings_file.write_text(yaml.safe_dump({"pretrain": section}))
    run = f"{settings.get('objective', 'semantoks')}-{settings['model']}"
    command = torchrun_command(settings_file, shard_folder, subjects_file, output_dir, processes, run)
    log("running " + " ".join(command))
    with open(log_file or output_dir / "torchrun.log", "a") as output:
        result = subprocess.run(command, stdout=output, stderr=subprocess.STDOUT, env=env)
    if result.returncode != 0:
        raise RuntimeError(f"torchrun with {processes} processes failed (exit {result.returncode}); its output "
                           f"is in {log_file or output_dir / 'torchrun.log'}")
