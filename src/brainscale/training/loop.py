"""The pretraining loop: one subset of subjects, one model, checkpoints that resume exactly.

The run lasts the steps of ``pretrain.budget`` (see :mod:`.budget`: samples or steps, the same
at every subset size, or the reference's epochs). Every random choice is a function of the
seed and the position in training: the model initialisation of the seed, the subject order of
``(seed, pass)``, the crops, augmentations and candidate masks of ``(seed, pass, item)`` (drawn
in the DataLoader workers, see ``AugmentedViews``), the noise and the decision to mask of
``(seed, step)``. A run resumed from a checkpoint therefore replays the same steps as an
uninterrupted one, and N data-parallel processes take the same steps as one. Checkpoints are
written atomically every ``budget.checkpoint_every``; a non-finite loss stops training with
the step and the last good checkpoint named. Every ``monitor_every`` steps the log records
the collapse monitors of the teacher's CLS tokens (:mod:`.diagnostics`).
"""

from __future__ import annotations

import csv
import json
import os
import sys
import time
from contextlib import nullcontext
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel
from tqdm import tqdm

from ..io import atomic_file, load_torch_file
from ..models.semantoks import MODEL_SIZES, SemantoksConfig
from ..shards.reader import ShardDataset, shard_paths
from ..shards.writer import MANIFEST
from .budget import BatchStream, BudgetError, training_budget
from .diagnostics import MONITOR_COLUMNS, collapse_monitors
from .distillation import SelfDistillation
from .schedules import cosine_rise, ema_update, learning_rate, network_loss_weight
from .views import AugmentedViews

__all__ = ["TrainingError", "network_map_of", "model_config", "pretrain", "export_encoder", "save_encoder",
           "load_encoder", "LOG_COLUMNS"]

LOG_COLUMNS = ["step", "samples_seen", "passes", "loss", "cls", "network", "mask", "lr", "weight_decay", "momentum",
               "samples_per_s", *MONITOR_COLUMNS]
EXPORT_FORMAT = "brainscale-semantoks-encoder-1"


class TrainingError(RuntimeError):
    """Training cannot start or cannot go on (the message says why and what to do)."""


def network_map_of(shard_folder: str | Path) -> list[int]:
    """The model's (channels,) network map from the shards' ``network_mapping.npz``: 0-6, 7, 8."""
    mapping = np.load(Path(shard_folder) / "network_mapping.npz")
    cortical = mapping["network_map_schaefer400_7n"]
    offset = int(cortical.max()) + 1
    return [int(v) for v in cortical] + [offset + int(v) for v in mapping["network_map_tian3"]] + \
        [offset + 1 + int(v) for v in mapping["network_map_buckner7"]]


def model_config(settings: dict, network_map: list[int]) -> SemantoksConfig:
    size = settings["model"]
    if size not in MODEL_SIZES:
        raise TrainingError(f"pretrain.model '{size}' is not one of {sorted(MODEL_SIZES)}.")
    overrides = {k: v for k, v in (settings.get("architecture") or {}).items() if v is not None}
    return SemantoksConfig(**{**MODEL_SIZES[size], **overrides, "network_map": network_map})


def _device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise TrainingError("pretrain.device is cuda but no GPU is visible: set it to cpu or auto.")
    return torch.device(name)


def _save_atomic(payload: dict, path: Path) -> None:
    with atomic_file(path) as temporary:
        torch.save(payload, temporary)


def save_encoder(encoder, path: str | Path, **metadata) -> None:
    """Write an encoder export: its weights and config (plus ``metadata``), loadable by :func:`load_encoder`."""
    _save_atomic({"format": EXPORT_FORMAT, "config": encoder.config.to_dict(),
                  "state_dict": {k: v.detach().cpu() for k, v in encoder.state_dict().items()}, **metadata},
                 Path(path))


def export_encoder(model: SelfDistillation, path: Path, *, step: int, subjects: int, samples_seen: int,
                   passes: float) -> None:
    """The downstream artifact: the teacher encoder's weights and config, and how long it trained."""
    save_encoder(model.teacher, path, trained_steps=step, pretraining_subjects=subjects, samples_seen=samples_seen,
                 passes=passes)


def load_encoder(path: str | Path):
    """Load an exported encoder (see :func:`export_encoder`) in eval mode.

    Raises
    ------
    TrainingError
        If the file is not an export, or its weights do not fit the architecture its config names.
    """
    from ..models.semantoks import SemantoksEncoder

    payload = load_torch_file(path, TrainingError)
    if not isinstance(payload, dict) or payload.get("format") != EXPORT_FORMAT:
        raise TrainingError(f"{path}: not a brainscale encoder export ({EXPORT_FORMAT}). A reference "
                            "Brain-Semantoks checkpoint is read with format: reference (see config/README.md).")
    try:
        encoder = SemantoksEncoder(SemantoksConfig(**payload["config"]))
        encoder.load_state_dict(payload["state_dict"], strict=True)
    except (RuntimeError, TypeError, ValueError) as error:
        first = str(error).strip().splitlines()[:3]
        raise TrainingError(f"{path}: the weights do not match the architecture in the checkpoint's config "
                            f"({' '.join(first)}). The file was edited or written by another version: "
                            "export it again from its training run.") from None
    return encoder.eval()


def _step_generator(seed: int, step: int) -> torch.Generator:
    """The generator of one step's batch-level choices."""
    return torch.Generator().manual_seed(hash((int(seed), int(step))) % (2**62))


def _noise(shape: tuple, positions: list[int], global_batch: int, seed: int, step: int, device: torch.device,
           sd: float = 0.1) -> torch.Tensor:
    """Gaussian noise of this process's crops, drawn for the whole global batch on the device and
    sliced, so that data-parallel processes add exactly the noise one process would."""
    generator = torch.Generator(device=device).manual_seed(hash((int(seed), int(step), -1)) % (2**62))
    views, _, *rest = shape
    noise = torch.randn((views, global_batch, *rest), generator=generator, device=device)
    return noise[:, positions] * sd


def _accumulate_gradients(forward, views, missing, masks, chunks: int, autocast, **options) -> dict:
    """Forward and backward ``chunks`` slices of the batch in turn; return the mean losses.

    Each slice is a batch of its own for the coding rate (an estimate over fewer samples, as in
    any gradient accumulation with a non-additive loss); gradients add up to the mean.
    """
    size = views.shape[1] // chunks
    totals: dict = {}
    for chunk in range(chunks):
        part = slice(chunk * size, (chunk + 1) * size)
        with autocast:
            losses = forward(views[:, part], missing[part], None if masks is None else masks[:, part], **options)
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


def _teacher_cls(model: SelfDistillation, views: torch.Tensor, missing: torch.Tensor) -> torch.Tensor:
    """(2B, D) teacher CLS tokens of a step's views, for the collapse monitors."""
    with torch.no_grad():
        flat = views.flatten(0, 1)
        return model.teacher(flat, missing_channels=missing.repeat(views.shape[0], 1))[:, 0]


def pretrain(settings: dict, shard_folder: str | Path, subjects, output_dir: str | Path, *,
             stop_at_step: int | None = None, log=print) -> Path:
    """Pretrain on ``subjects`` and write checkpoint, CSV log, loss figure and encoder export.

    Parameters
    ----------
    settings : dict
        The ``pretrain`` config section.
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
    batch_size = settings["batch_size"]
    try:
        budget = training_budget(settings["budget"], batch_size=batch_size, subset_size=len(subjects))
    except BudgetError as error:
        raise TrainingError(str(error)) from None
    config = model_config(settings, network_map_of(shard_folder))
    world_size, rank, device = _distributed(settings)
    device = device or _device(settings["device"])
    if batch_size % world_size:
        raise TrainingError(f"pretrain.batch_size {batch_size} is not divisible by the {world_size} processes.")
    local_batch = batch_size // world_size
    if local_batch % settings["accumulate"] or local_batch // settings["accumulate"] < 2:
        raise TrainingError(f"pretrain.accumulate {settings['accumulate']} must divide the per-process batch "
                            f"({local_batch}) into slices of at least 2 subjects.")
    seed = settings["seed"]
    views_settings = settings["views"]
    crops = ShardDataset(shard_paths(shard_folder), subjects, crop_length=config.crop_length, seed=seed,
                         preload=settings["preload"], views=2, view_mode=views_settings["mode"],
                         min_gap=views_settings["min_gap"])
    if views_settings["mode"] == "cross_run" and crops.subjects_with_several_runs == 0:
        raise TrainingError(f"pretrain.views.mode is cross_run, but none of the {len(subjects)} subjects of this "
                            "subset has two runs in the shards: set pretrain.views.mode to distant (or "
                            "independent), or pretrain on subjects with repeated runs or sessions.")
    torch.manual_seed(seed)
    model = SelfDistillation(config).to(device)
    parameters = [p for p in model.student_modules().parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(parameters, lr=0.0, weight_decay=settings["weight_decay"][0])
    dataset = AugmentedViews(crops, n_networks=config.n_networks, n_patches=config.n_patches, seed=seed)
    stream = BatchStream(budget, seed)
    total_steps = budget.total_steps
    base_lr = settings["base_lr"] * batch_size / 256
    checkpoint_path, log_path = output_dir / "checkpoint.pt", output_dir / "log.csv"
    step, log_rows = 0, []
    # A checkpoint is resumed only for the same model, settings, subjects and shard contents.
    identity = {"config": config.to_dict(), "settings": settings, "subjects": sorted(subjects),
                "shards": json.loads((Path(shard_folder) / MANIFEST).read_text())["shards"]}
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
        _write_log(log_path, log_rows)
    log(f"budget: {total_steps} steps of {batch_size} = {budget.samples} samples, "
        f"{budget.passes(total_steps):.1f} passes over {len(subjects)} subjects; views {views_settings['mode']}")

    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else nullcontext()
    forward = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None) \
        if world_size > 1 else model
    forward = torch.compile(forward) if settings["compile"] else forward
    last_step = total_steps if stop_at_step is None else min(stop_at_step, total_steps)
    shares = stream.shares(range(step, last_step), rank * local_batch, local_batch)  # this process's part
    loader = torch.utils.data.DataLoader(dataset, batch_sampler=shares, num_workers=settings["num_workers"])
    positions = list(range(rank * local_batch, (rank + 1) * local_batch))
    model.train()
    rows = []

    def save_checkpoint() -> None:
        log_rows.extend(rows)
        if rank == 0:
            _write_log(log_path, rows, append=True)
            _save_atomic({"model": model.state_dict(), "optimizer": optimizer.state_dict(), "step": step,
                          "identity": identity, "log_rows": log_rows}, checkpoint_path)
        rows.clear()
        if world_size > 1:
            dist.barrier()  # the checkpoint is complete before any process goes on

    progress = tqdm(loader, desc="pretraining", initial=step, total=total_steps, leave=False,
                    disable=rank != 0 or not sys.stderr.isatty())
    for views, missing, masks in progress:
        started = time.perf_counter()
        use_masks = bool(torch.rand((), generator=_step_generator(seed, step)) < settings["mask_probability"])
        views = views.transpose(0, 1).to(device, non_blocking=True)  # (2, B, C, T)
        views = views + _noise(tuple(views.shape), positions, batch_size, seed, step, device)
        missing = missing.to(device)
        masks = masks.transpose(0, 1).to(device) if use_masks else None
        lr = learning_rate(step, base=base_lr, warmup_steps=budget.warmup_steps, total_steps=total_steps)
        weight_decay = cosine_rise(step, start=settings["weight_decay"][0], end=settings["weight_decay"][1],
                                   total_steps=total_steps)
        for group in optimizer.param_groups:
            group["lr"], group["weight_decay"] = lr, weight_decay
        network_weight = network_loss_weight(step, weight=settings["network_weight"],
                                             decay_steps=budget.network_decay_steps)
        optimizer.zero_grad(set_to_none=True)
        losses = _accumulate_gradients(forward, views, missing, masks, settings["accumulate"],
                                       autocast, network_weight=network_weight,
                                       mask_weight=settings["mask_weight"], eps=settings["eps"],
                                       world_size=world_size)
        if not torch.isfinite(losses["total"]):
            last = str(checkpoint_path) if checkpoint_path.is_file() else "none (no checkpoint written yet)"
            raise TrainingError(f"non-finite loss at step {step} (pass {stream.pass_of(step)}); training stopped. "
                                f"Last good checkpoint: {last}. Lower pretrain.base_lr or check the shards.")
        torch.nn.utils.clip_grad_norm_(parameters, settings["grad_clip"])
        optimizer.step()
        momentum = cosine_rise(step, start=settings["momentum"][0], end=settings["momentum"][1],
                               total_steps=total_steps)
        ema_update(model.teacher_modules(), model.student_modules(), momentum)
        applied = {"total": True, "cls": True, "network": network_weight > 0, "mask": masks is not None}
        terms = [float(losses[k].detach()) if applied[k] else float("nan") for k in applied]  # NaN: not applied
        monitors = [float("nan")] * len(MONITOR_COLUMNS)
        if step % settings["monitor_every"] == 0 or step + 1 == total_steps:
            values = collapse_monitors(_teacher_cls(model, views, missing))
            monitors = [values[name] for name in MONITOR_COLUMNS]
        step += 1
        rows.append([step - 1, step * batch_size, budget.passes(step), *terms, lr, weight_decay, momentum,
                     batch_size / (time.perf_counter() - started), *monitors])
        progress.set_postfix(loss=f"{rows[-1][3]:.4f}")
        if step % budget.checkpoint_every_steps == 0 or step in (total_steps, last_step):
            save_checkpoint()
            log(f"step {step}/{total_steps}: loss {log_rows[-1][3]:.4f}")
    if step < total_steps:
        return None
    export = output_dir / "encoder.pt"
    if rank == 0:
        export_encoder(model, export, step=step, subjects=len(subjects), samples_seen=step * batch_size,
                       passes=budget.passes(step))
        from ..plotting.training import plot_loss_curve

        plot_loss_curve(log_path, output_dir / "loss.png")
    return export


def _write_log(path: Path, rows: list, *, append: bool = False) -> None:
    """Write (or append) rows of the CSV training log."""
    with path.open("a" if append else "w", newline="") as handle:
        writer = csv.writer(handle)
        if not append:
            writer.writerow(LOG_COLUMNS)
        writer.writerows(rows)
