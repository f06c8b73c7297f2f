"""Training checkpoints: written atomically, resumed only by the run that wrote them.

A checkpoint holds the model and optimizer states, the step, the log rows so far and the run's
identity: its objective, architecture, run specification, subjects and shard contents. A checkpoint
of another identity is ignored (the run starts over) rather than mixed into this one.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from ..io import atomic_file
from ..shards.writer import MANIFEST

__all__ = ["run_identity", "resume", "save_checkpoint"]


def run_identity(run, config, subjects: list[str], shard_folder: str | Path) -> dict:
    """What a checkpoint must match to be resumed: the run's spec, the encoder config, subjects and shards."""
    return {"objective": run.objective, "config": config.to_dict(), "settings": run.to_dict(),
            "subjects": sorted(subjects), "shards": json.loads((Path(shard_folder) / MANIFEST).read_text())["shards"]}


def resume(path: Path, identity: dict, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
           device: torch.device, log=print) -> tuple[int, list]:
    """Load the checkpoint at ``path`` into ``model`` and ``optimizer`` when it is this run's;
    return (steps done, log rows so far), (0, []) when there is none to resume."""
    if not path.is_file():
        return 0, []
    state = torch.load(path, map_location=device, weights_only=False)
    if state.get("identity") != identity:
        log(f"{path} belongs to another model, settings, subset or shards: starting over")
        return 0, []
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    log(f"resuming from {path} at step {state['step']}")
    return state["step"], state["log_rows"]


def save_checkpoint(path: Path, *, model: torch.nn.Module, optimizer: torch.optim.Optimizer, step: int,
                    identity: dict, log_rows: list) -> None:
    """Write the checkpoint atomically (a crash leaves the previous one)."""
    with atomic_file(path) as temporary:
        torch.save({"model": model.state_dict(), "optimizer": optimizer.state_dict(), "step": step,
                    "identity": identity, "log_rows": log_rows}, temporary)
