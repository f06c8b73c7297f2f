"""The pretraining loop: one objective, one subset of subjects, checkpoints that resume exactly.

The loop does not know which objective it runs (``settings["objective"]``, see
:mod:`brainscale.objectives`): the objective builds the model, draws its views and masks in the
DataLoader workers, prepares each step's batch and returns its losses. A run lasts the steps of
``pretrain.budget`` (see :mod:`.budget`: samples or steps, the same at every subset size, or the
reference's epochs). Every random choice is a function of the seed and the position in training: the
model initialisation of the seed, the subject order of ``(seed, pass)``, an item's crops,
augmentations and masks of ``(seed, pass, item)``, a step's draws (Brain-Semantoks: noise, the
decision to mask) of ``(seed, step)``. A run resumed from a checkpoint therefore replays the same
steps as an uninterrupted one, and N data-parallel processes take the same steps as one. Checkpoints
are written atomically every ``budget.checkpoint_every``. Losses stay on the device until the next
monitor or checkpoint step, where they come back in one host sync; a non-finite one then stops
training, with its step and the last good checkpoint named, before anything is saved. ``log.csv``
gives each step the throughput (``samples_per_s``) and the share of wall time spent waiting for the
DataLoader (``data_wait``) of the window between two such syncs. Every ``monitor_every`` steps the
log records the collapse monitors (:mod:`.diagnostics`) of the exported encoder's CLS (or token mean).
"""

from __future__ import annotations

import csv
import json
import math
import os
import sys
import time
from contextlib import nullcontext
from pathlib import Path

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel
from tqdm import tqdm

from ..io import atomic_file, load_torch_file
from ..objectives import PretrainingData, Step, get_objective, run_settings
from ..objectives.semantoks import model_config
from ..shards.writer import MANIFEST
from .budget import BatchStream, BudgetError, training_budget
from .diagnostics import MONITOR_COLUMNS, collapse_monitors
from .errors import TrainingError
from .schedules import cosine_rise, ema_update, learning_rate

__all__ = ["TrainingError", "network_map_of", "model_config", "pretrain", "save_encoder", "load_encoder",
           "log_columns"]

EXPORT_FORMAT = "brainscale-encoder-2"
#: Exports written before objectives were plug-ins: Brain-Semantoks encoders.
LEGACY_FORMATS = {"brainscale-semantoks-encoder-1": "semantoks"}


def log_columns(loss_terms) -> list[str]:
    """The columns of ``log.csv`` for an objective with these loss terms."""
    return ["step", "samples_seen", "passes", "loss", *loss_terms, "lr", "weight_decay", "momentum",
            "samples_per_s", "data_wait", *MONITOR_COLUMNS]


def network_map_of(shard_folder: str | Path) -> list[int]:
    """The model's (channels,) network map from the shards' ``network_mapping.npz``: 0-6, 7, 8."""
    return PretrainingData(Path(shard_folder), (), 0).network_map


def _device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise TrainingError("pretrain.device is cuda but no GPU is visible: set it to cpu or auto.")
    return torch.device(name)


def _save_atomic(payload: dict, path: Path) -> None:
    with atomic_file(path) as temporary:
        torch.save(payload, temporary)


def save_encoder(encoder, path: str | Path, *, objective: str = "semantoks", **metadata) -> None:
    """Write an encoder export: its objective, weights and config (plus ``metadata``), loadable by
    :func:`load_encoder`."""
    _save_atomic({"format": EXPORT_FORMAT, "objective": objective, "config": encoder.config.to_dict(),
                  "state_dict": {k: v.detach().cpu() for k, v in encoder.state_dict().items()}, **metadata},
                 Path(path))


def load_encoder(path: str | Path):
    """Load an exported encoder (see :func:`export_encoder`) in eval mode.

    Raises
    ------
    TrainingError
        If the file is not an export, or its weights do not fit the architecture its config names.
    """
    payload = load_torch_file(path, TrainingError)
    export_format = payload.get("format") if isinstance(payload, dict) else None
    if export_format != EXPORT_FORMAT and export_format not in LEGACY_FORMATS:
        raise TrainingError(f"{path}: not a brainscale encoder export ({EXPORT_FORMAT}). A reference "
                            "Brain-Semantoks checkpoint is read with format: reference (see config/README.md).")
    objective = get_objective(payload.get("objective") or LEGACY_FORMATS[export_format])
    try:
        encoder = objective.encoder_from_config(payload["config"])
        encoder.load_state_dict(payload["state_dict"], strict=True)
    except (RuntimeError, TypeError, ValueError) as error:
        first = str(error).strip().splitlines()[:3]
        raise TrainingError(f"{path}: the weights do not match the architecture in the checkpoint's config "
                            f"({' '.join(first)}). The file was edited or written by another version: "
                            "export it again from its training run.") from None
    return encoder.eval()


def _accumulate_gradients(forward, tensors: tuple, chunks: int, autocast, **options) -> dict:
    """Forward and backward ``chunks`` slices of the (sample-major) batch in turn; return the mean losses.

    Each slice is a batch of its own for batch-level losses such as the coding rate (an estimate
    over fewer samples, as in any gradient accumulation with a non-additive loss); gradients add
    up to the mean.
    """
    size = tensors[0].shape[0] // chunks
    totals: dict = {}
    for chunk in range(chunks):
        part = slice(chunk * size, (chunk + 1) * size)
        with autocast:
            losses = forward(*(None if t is None else t[part] for t in tensors), **options)
        (losses["total"] / chunks).backward()
        for name, value in losses.items():
            totals[name] = totals.get(name, 0.0) + value.detach() / chunks
    return totals


def _distributed(settings: dict) -> tuple[int, int, torch.device | None]:
    """(world size, rank, device) under torchrun; (1, 0, None) otherwise."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size == 1:
        return 1, 0, None
    cuda = settings["device"] != "cpu" and torch.cuda.is_available()
    if not dist.is_initialized():
        dist.init_process_group("nccl" if cuda else "gloo")
    device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0"))) if cuda else torch.device("cpu")
    if cuda:
        torch.cuda.set_device(device)
    return world_size, dist.get_rank(), device


def pretrain(settings: dict, shard_folder: str | Path, subjects, output_dir: str | Path, *,
             stop_at_step: int | None = None, log=print) -> Path:
    """Pretrain on ``subjects`` and write checkpoint, CSV log, loss figure and encoder export.

    Parameters
    ----------
    settings : dict
        The ``pretrain`` config section of one run (:func:`brainscale.objectives.run_settings`):
        ``objective`` (default ``semantoks``) and ``model``, the objective's size. A whole section
        (without ``model``) trains the first of its ``objectives``.
    shard_folder : path
        ``results/shards``.
    subjects : array of str
        The pretraining subset.
    output_dir : path
        Receives ``checkpoint.pt``, ``log.csv``, ``loss.png`` and ``encoder.pt``.
    stop_at_step : int, optional
        Stop (with a checkpoint) once this many steps are done, as if interrupted.

    Returns
    -------
    Path of ``encoder.pt`` (None when stopped early).
    """
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    subjects = [str(s) for s in subjects]
    if not subjects:
        raise TrainingError("the pretraining subset is empty: check splits.pretrain_sizes and the split files.")
    if "model" not in settings:  # a whole pretrain section: its first run
        if not settings.get("objectives"):
            raise TrainingError("the settings name no run: pass run_settings(pretrain, 'objective-size') "
                                "(brainscale.objectives) or a pretrain section with objectives.")
        settings = run_settings(settings, settings["objectives"][0])
    settings = {"objective": "semantoks", **settings}
    objective_class = get_objective(settings["objective"])
    objective_class.check(settings)
    batch_size = settings["batch_size"]
    try:
        budget = training_budget(settings["budget"], batch_size=batch_size, subset_size=len(subjects))
    except BudgetError as error:
        raise TrainingError(str(error)) from None
    seed = settings["seed"]
    objective = objective_class(settings, PretrainingData(Path(shard_folder), tuple(subjects), seed))
    world_size, rank, device = _distributed(settings)
    device = device or _device(settings["device"])
    if batch_size % world_size:
        raise TrainingError(f"pretrain.batch_size {batch_size} is not divisible by the {world_size} processes.")
    local_batch = batch_size // world_size
    if local_batch % settings["accumulate"] or local_batch // settings["accumulate"] < 2:
        raise TrainingError(f"pretrain.accumulate {settings['accumulate']} must divide the per-process batch "
                            f"({local_batch}) into slices of at least 2 subjects.")
    dataset = objective.dataset()
    torch.manual_seed(seed)
    model = objective.build().to(device)
    parameters = [p for p in model.trainable_modules().parameters() if p.requires_grad]
    # one fused kernel per step on a GPU instead of a handful of multi-tensor ones
    optimizer = torch.optim.AdamW(parameters, lr=0.0, weight_decay=settings["weight_decay"][0],
                                  fused=device.type == "cuda")
    ema_pairs = model.ema_pairs()
    stream = BatchStream(budget, seed)
    total_steps = budget.total_steps
    base_lr = settings["base_lr"] * batch_size / 256
    columns = log_columns(objective.loss_terms)
    checkpoint_path, log_path = output_dir / "checkpoint.pt", output_dir / "log.csv"
    step, log_rows = 0, []
    # A checkpoint is resumed only for the same objective, model, settings, subjects and shard contents.
    identity = {"objective": objective.name, "config": model.encoder.config.to_dict(), "settings": settings,
                "subjects": sorted(subjects), "shards": json.loads((Path(shard_folder) / MANIFEST).read_text())["shards"]}
    state = torch.load(checkpoint_path, map_location=device, weights_only=False) if checkpoint_path.is_file() else None
    if state is not None and state.get("identity") != identity:
        log(f"{checkpoint_path} belongs to another model, settings, subset or shards: starting over")
        state = None
    if state is not None:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        step, log_rows = state["step"], state["log_rows"]
        log(f"resuming from {checkpoint_path} at step {step}")
    if rank == 0:  # the log restarts from the checkpoint's copy (Snakemake may have removed log.csv)
        _write_log(log_path, log_rows, columns)
    log(f"{objective.name}-{settings['model']}: {total_steps} steps of {batch_size} = {budget.samples} samples, "
        f"{budget.passes(total_steps):.1f} passes over {len(subjects)} subjects")

    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else nullcontext()
    forward = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None) \
        if world_size > 1 else model
    forward = torch.compile(forward) if settings["compile"] else forward
    last_step = total_steps if stop_at_step is None else min(stop_at_step, total_steps)
    shares = stream.shares(range(step, last_step), rank * local_batch, local_batch)  # this process's part
    loader = torch.utils.data.DataLoader(dataset, batch_sampler=shares, num_workers=settings["num_workers"],
                                         pin_memory=device.type == "cuda")
    positions = list(range(rank * local_batch, (rank + 1) * local_batch))
    model.train()
    rows = []
    # Steps whose losses are still on the device: read back together at the next monitor or checkpoint
    # (one host sync there instead of several per step, so that a GPU never waits for the host).
    pending: list[tuple] = []
    window = {"started": time.perf_counter(), "data_wait": 0.0}
    missing_term = torch.full((), float("nan"), device=device)

    def flush() -> None:
        """Log the pending steps; stop at the first non-finite loss before anything is saved."""
        if not pending:
            return
        values = torch.stack([terms for *_, terms, _ in pending]).float().cpu().tolist()
        elapsed = time.perf_counter() - window["started"]
        for (done, lr, weight_decay, momentum, _, monitors), terms in zip(pending, values):
            if not math.isfinite(terms[0]):
                last = str(checkpoint_path) if checkpoint_path.is_file() else "none (no checkpoint written yet)"
                raise TrainingError(f"non-finite loss at step {done} (pass {stream.pass_of(done)}); training "
                                    f"stopped. Last good checkpoint: {last}. Lower pretrain.base_lr or check "
                                    "the shards.")
            # throughput and the share of time spent waiting for the loader, over the window
            rows.append([done, (done + 1) * batch_size, budget.passes(done + 1), *terms, lr, weight_decay,
                         momentum, batch_size * len(pending) / elapsed, window["data_wait"] / elapsed, *monitors])
        pending.clear()
        progress.set_postfix(loss=f"{rows[-1][3]:.4f}")
        window.update(started=time.perf_counter(), data_wait=0.0)

    def save_checkpoint() -> None:
        log_rows.extend(rows)
        if rank == 0:
            _write_log(log_path, rows, columns, append=True)
            _save_atomic({"model": model.state_dict(), "optimizer": optimizer.state_dict(), "step": step,
                          "identity": identity, "log_rows": log_rows}, checkpoint_path)
        rows.clear()
        if world_size > 1:
            dist.barrier()  # the checkpoint is complete before any process goes on

    progress = tqdm(desc="pretraining", initial=step, total=total_steps, leave=False,
                    disable=rank != 0 or not sys.stderr.isatty())
    batches = iter(loader)
    while True:
        asked = time.perf_counter()
        batch = next(batches, None)
        window["data_wait"] += time.perf_counter() - asked
        if batch is None:
            break
        tensors, options = objective.prepare(batch, Step(step=step, budget=budget, device=device, positions=positions,
                                                         global_batch=batch_size, seed=seed, world_size=world_size))
        lr = learning_rate(step, base=base_lr, warmup_steps=budget.warmup_steps, total_steps=total_steps)
        weight_decay = cosine_rise(step, start=settings["weight_decay"][0], end=settings["weight_decay"][1],
                                   total_steps=total_steps)
        for group in optimizer.param_groups:
            group["lr"], group["weight_decay"] = lr, weight_decay
        optimizer.zero_grad(set_to_none=True)
        losses = _accumulate_gradients(forward, tensors, settings["accumulate"], autocast, **options)
        torch.nn.utils.clip_grad_norm_(parameters, settings["grad_clip"])
        optimizer.step()
        momentum = float("nan")
        if ema_pairs:
            momentum = cosine_rise(step, start=settings["momentum"][0], end=settings["momentum"][1],
                                   total_steps=total_steps)
            for target, online in ema_pairs:
                ema_update(target, online, momentum)
        # NaN: a term this step did not apply
        terms = torch.stack([losses.get(k, missing_term).float() for k in ("total", *objective.loss_terms)])
        monitored = step % settings["monitor_every"] == 0 or step + 1 == total_steps
        monitors = [float("nan")] * len(MONITOR_COLUMNS)
        if monitored:
            values = collapse_monitors(objective.monitor_features(model, tensors))
            monitors = [values[name] for name in MONITOR_COLUMNS]
        pending.append((step, lr, weight_decay, momentum, terms, monitors))
        step += 1
        progress.update()
        checkpointed = step % budget.checkpoint_every_steps == 0 or step in (total_steps, last_step)
        if monitored or checkpointed:
            flush()
        if checkpointed:
            save_checkpoint()
            log(f"step {step}/{total_steps}: loss {log_rows[-1][3]:.4f}")
    progress.close()
    if step < total_steps:
        return None
    export = output_dir / "encoder.pt"
    if rank == 0:
        save_encoder(model.encoder, export, objective=objective.name, trained_steps=step,
                     pretraining_subjects=len(subjects), samples_seen=step * batch_size, passes=budget.passes(step))
        from ..plotting.training import plot_loss_curve

        plot_loss_curve(log_path, output_dir / "loss.png")
    return export


def _write_log(path: Path, rows: list, columns: list[str], *, append: bool = False) -> None:
    """Write (or append) rows of the CSV training log."""
    with path.open("a" if append else "w", newline="") as handle:
        writer = csv.writer(handle)
        if not append:
            writer.writerow(columns)
        writer.writerows(rows)
