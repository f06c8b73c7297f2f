"""Everything a pretraining run holds before its first step: processes, device, objective, budget,
model, optimizer and data loader, checked at the door."""

from __future__ import annotations

import os
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

from ..errors import TrainingError
from ..objectives import RunSpec, get_objective
from ..objectives.base import Objective, PretrainingData
from .budget import BatchStream, BudgetError, TrainingBudget, training_budget

__all__ = ["Processes", "Training", "set_up", "pick_device", "distributed_processes"]


@dataclass(frozen=True)
class Processes:
    """This process's place among the data-parallel ones (one process: world size 1, rank 0)."""

    world_size: int
    rank: int
    device: torch.device
    local_batch: int

    @property
    def positions(self) -> list[int]:
        """This process's positions in the global batch."""
        return list(range(self.rank * self.local_batch, (self.rank + 1) * self.local_batch))


@dataclass
class Training:
    """A run ready to train: what :func:`set_up` builds and the loop steps through."""

    run: RunSpec
    objective: Objective
    budget: TrainingBudget
    stream: BatchStream
    processes: Processes
    dataset: torch.utils.data.Dataset
    model: torch.nn.Module
    parameters: list
    optimizer: torch.optim.Optimizer
    ema_pairs: list

    @property
    def seed(self) -> int:
        return self.run.training["seed"]

    def forward(self):
        """The model as the step calls it: wrapped for data parallelism, compiled when asked."""
        forward = self.model
        if self.processes.world_size > 1:
            device = self.processes.device
            forward = DistributedDataParallel(forward, device_ids=[device.index] if device.type == "cuda" else None)
        return torch.compile(forward) if self.run.training["compile"] else forward

    def autocast(self):
        return torch.autocast("cuda", dtype=torch.bfloat16) if self.processes.device.type == "cuda" else nullcontext()

    def loader(self, steps: range) -> torch.utils.data.DataLoader:
        """The DataLoader of this process's share of the batches of ``steps``."""
        share = self.stream.shares(steps, self.processes.rank * self.processes.local_batch, self.processes.local_batch)
        return torch.utils.data.DataLoader(self.dataset, batch_sampler=share, num_workers=self.run.training["num_workers"],
                                           pin_memory=self.processes.device.type == "cuda")


def pick_device(name: str) -> torch.device:
    """``pretrain.device``: cpu, cuda, or auto (cuda when a GPU is visible)."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise TrainingError("pretrain.device is cuda but no GPU is visible: set it to cpu or auto.")
    return torch.device(name)


def distributed_processes(device_setting: str, batch_size: int, accumulate: int) -> Processes:
    """This process's :class:`Processes`, joining the process group under torchrun; the batch is checked
    against the processes and the accumulation slices."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank, device = 0, None
    if world_size > 1:
        cuda = device_setting != "cpu" and torch.cuda.is_available()
        if not dist.is_initialized():
            dist.init_process_group("nccl" if cuda else "gloo")
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0"))) if cuda else torch.device("cpu")
        if cuda:
            torch.cuda.set_device(device)
        rank = dist.get_rank()
    if batch_size % world_size:
        raise TrainingError(f"pretrain.batch_size {batch_size} is not divisible by the {world_size} processes.")
    local_batch = batch_size // world_size
    if local_batch % accumulate or local_batch // accumulate < 2:
        raise TrainingError(f"pretrain.accumulate {accumulate} must divide the per-process batch "
                            f"({local_batch}) into slices of at least 2 subjects.")
    return Processes(world_size, rank, device or pick_device(device_setting), local_batch)


def set_up(run: RunSpec, shard_folder: str | Path, subjects: list[str]) -> Training:
    """Build the run's objective, budget, processes, dataset, model (initialised from the seed) and optimizer."""
    settings = run.training
    if not subjects:
        raise TrainingError("the pretraining subset is empty: check splits.pretrain_sizes and the split files.")
    try:
        budget = training_budget(settings["budget"], batch_size=settings["batch_size"], subset_size=len(subjects))
    except BudgetError as error:
        raise TrainingError(str(error)) from None
    seed = settings["seed"]
    objective = get_objective(run.objective)(run, PretrainingData(Path(shard_folder), tuple(subjects), seed))
    processes = distributed_processes(settings["device"], settings["batch_size"], settings["accumulate"])
    dataset = objective.dataset()
    torch.manual_seed(seed)
    model = objective.build().to(processes.device)
    parameters = [p for p in model.trainable_modules().parameters() if p.requires_grad]
    # one fused kernel per step on a GPU instead of a handful of multi-tensor ones
    optimizer = torch.optim.AdamW(parameters, lr=0.0, weight_decay=settings["weight_decay"][0],
                                  fused=processes.device.type == "cuda")
    return Training(run=run, objective=objective, budget=budget, stream=BatchStream(budget, seed), processes=processes,
                    dataset=dataset, model=model, parameters=parameters, optimizer=optimizer,
                    ema_pairs=model.ema_pairs())
