"""The pretraining loop: one objective, one subset of subjects, checkpoints that resume exactly.

The loop does not know which objective it runs (a :class:`~brainscale.objectives.RunSpec` names
it, see :mod:`brainscale.objectives`): the objective builds the model, draws its views and masks in the
DataLoader workers, prepares each step's batch and returns its losses. A run lasts the steps of
``pretrain.budget`` (see :mod:`.budget`: samples or steps, the same at every subset size, or the
reference's epochs). Every random choice is a function of the seed and the position in training: the
model initialisation of the seed, the subject order of ``(seed, pass)``, an item's crops,
augmentations and masks of ``(seed, pass, item)``, a step's draws (Brain-Semantoks: noise, the
decision to mask) of ``(seed, step)``. A run resumed from a checkpoint therefore replays the same
steps as an uninterrupted one, and N data-parallel processes take the same steps as one. Checkpoints
are written atomically every ``budget.checkpoint_every``. Losses stay on the device until the next
monitor or checkpoint step, where they come back in one host sync; a non-finite one then stops
training, with its step and the last good checkpoint named, before anything is saved
(:mod:`.logbook`). Every ``monitor_every`` steps the log records the collapse monitors
(:mod:`.diagnostics`) of the exported encoder's CLS (or token mean); at ``pretrain.evaluation.points``
evenly spaced steps, the held-out loss (:mod:`.evaluation`).

The pieces: :mod:`.setup` builds the run, :mod:`.checkpoint` saves and resumes it, :mod:`.logbook`
writes ``log.csv``, :mod:`brainscale.export` the encoder.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import torch
from tqdm import tqdm

from ..errors import TrainingError
from ..export import save_encoder
from ..objectives import RunSpec
from ..objectives.base import Step
from .checkpoint import resume, run_identity, save_checkpoint
from .diagnostics import MONITOR_COLUMNS, collapse_monitors
from .evaluation import HeldOutLoss, evaluation_steps
from .logbook import TrainingLog
from .schedules import cosine_rise, ema_update, learning_rate
from .setup import Training, set_up

__all__ = ["pretrain", "train_step"]


def pretrain(run: RunSpec, shard_folder: str | Path, subjects, output_dir: str | Path, *,
             evaluation_subjects=None, stop_at_step: int | None = None, log=print) -> Path | None:
    """Pretrain on ``subjects`` and write checkpoint, CSV log, loss figure and encoder export.

    Parameters
    ----------
    run : RunSpec
        The run (:func:`brainscale.objectives.run_spec`, or ``RunSpec.read`` of a ``run.yaml``).
    shard_folder : path
        ``results/shards``.
    subjects : array of str
        The pretraining subset.
    output_dir : path
        Receives ``checkpoint.pt``, ``log.csv``, ``loss.png`` and ``encoder.pt``.
    evaluation_subjects : array of str, optional
        Subjects no pretraining subset contains (:func:`.evaluation.evaluation_subjects`): the run's
        held-out loss is scored on them (``pretrain.evaluation``); None leaves the ``val_*`` and
        ``seen_*`` columns of ``log.csv`` empty.
    stop_at_step : int, optional
        Stop (with a checkpoint) once this many steps are done, as if interrupted.

    Returns
    -------
    Path of ``encoder.pt`` (None when stopped early).
    """
    if not isinstance(run, RunSpec):
        raise TrainingError(f"pretrain() takes a RunSpec (brainscale.objectives.run_spec(section, run)), "
                            f"not {type(run).__name__}.")
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    subjects = [str(s) for s in subjects]
    training = set_up(run, shard_folder, subjects)
    checkpoint_path = output_dir / "checkpoint.pt"
    identity = run_identity(run, training.model.encoder.config, subjects, shard_folder)
    step, rows = resume(checkpoint_path, identity, training.model, training.optimizer, training.processes.device, log)
    logbook = TrainingLog(output_dir / "log.csv", training.objective.loss_terms, training.budget, rows=rows,
                          checkpoint_path=checkpoint_path, stream=training.stream)
    if training.processes.rank == 0:
        logbook.restart()
    budget = training.budget
    log(f"{run.run}: {budget.total_steps} steps of {budget.batch_size} = {budget.samples} samples, "
        f"{budget.passes(budget.total_steps):.1f} passes over {len(subjects)} subjects")
    last_step = budget.total_steps if stop_at_step is None else min(stop_at_step, budget.total_steps)
    held_out = _held_out_loss(training, subjects, evaluation_subjects, log)
    step = _train(training, logbook, identity, checkpoint_path, range(step, last_step), log, held_out)
    if step < budget.total_steps:
        return None
    if training.processes.rank == 0:
        _export(training, output_dir, len(subjects))
    return output_dir / "encoder.pt"


def _held_out_loss(training: Training, subjects: list[str], evaluation_subjects, log):
    """``(scorer, steps)`` of the held-out loss (:mod:`.evaluation`), or None when it is off or not this rank's."""
    settings = training.run.training.get("evaluation") or {}
    if evaluation_subjects is None or not settings.get("subjects") or training.processes.rank != 0:
        return None
    scorer = HeldOutLoss(training.objective, training.budget, training.processes.device,
                         held_out=[str(s) for s in evaluation_subjects], subset=subjects,
                         samples=settings["samples"], seed=settings["seed"])
    steps = evaluation_steps(training.budget.total_steps, settings["points"])
    log(f"held-out loss on {settings['samples']} crops of {len(evaluation_subjects)} evaluation subjects (and of "
        f"the subset) after steps {steps}")
    return scorer, set(steps)


def _export(training: Training, output_dir: Path, n_subjects: int) -> None:
    """``encoder.pt`` (with the run specification and how much it trained) and the loss figure."""
    from ..plotting.training import plot_loss_curve

    run, budget, steps = training.run, training.budget, training.budget.total_steps
    save_encoder(training.model.encoder, output_dir / "encoder.pt", objective=run.objective, run=run.to_dict(),
                 trained_steps=steps, pretraining_subjects=n_subjects, samples_seen=steps * budget.batch_size,
                 passes=budget.passes(steps))
    plot_loss_curve(output_dir / "log.csv", output_dir / "loss.png")


def _train(training: Training, logbook: TrainingLog, identity: dict, checkpoint_path: Path, steps: range,
           log, held_out=None) -> int:
    """Take ``steps``, logging, scoring the held-out loss and checkpointing as the budget says; return the
    steps done."""
    budget, processes = training.budget, training.processes
    forward, autocast = training.forward(), training.autocast()
    training.model.train()
    progress = tqdm(desc="pretraining", initial=steps.start, total=budget.total_steps, leave=False,
                    disable=processes.rank != 0 or not sys.stderr.isatty())
    loader, step = training.loader(steps), steps.start
    missing = torch.full((), float("nan"), device=processes.device)  # a loss term a step did not apply
    logbook.start()
    batches = iter(loader)
    while True:
        asked = time.perf_counter()
        batch = next(batches, None)
        logbook.waited(time.perf_counter() - asked)
        if batch is None:
            break
        monitored = step % training.run.training["monitor_every"] == 0 or step + 1 == budget.total_steps
        train_step(training, forward, autocast, batch, step, logbook, monitored=monitored, missing=missing)
        step += 1
        progress.update()
        checkpointed = step % budget.checkpoint_every_steps == 0 or step in (budget.total_steps, steps.stop)
        evaluated = held_out is not None and step in held_out[1]
        if monitored or checkpointed or evaluated:
            logbook.flush()
            progress.set_postfix(loss=f"{logbook.last_loss:.4f}")
        if evaluated:
            scores = held_out[0].score(training.model)
            logbook.evaluated(scores)
            log(f"step {step}: held-out loss {scores['val_loss']:.4f}, on the subset {scores['seen_loss']:.4f}")
        if checkpointed:
            rows = logbook.commit(write=processes.rank == 0)
            if processes.rank == 0:
                save_checkpoint(checkpoint_path, model=training.model, optimizer=training.optimizer, step=step,
                                identity=identity, log_rows=rows)
            if processes.world_size > 1:
                torch.distributed.barrier()  # the checkpoint is complete before any process goes on
            log(f"step {step}/{budget.total_steps}: loss {rows[-1][3]:.4f}")
    progress.close()
    return step


def train_step(training: Training, forward, autocast, batch, step: int, logbook: TrainingLog, *,
               monitored: bool, missing: torch.Tensor) -> None:
    """One optimizer step (schedules, accumulated gradients, clipping, EMA); its losses go to ``logbook``,
    ``missing`` (NaN on the device) for a term the step did not apply."""
    run, processes, budget = training.run.training, training.processes, training.budget
    tensors, options = training.objective.prepare(batch, Step(
        step=step, budget=budget, device=processes.device, positions=processes.positions,
        global_batch=budget.batch_size, seed=training.seed, world_size=processes.world_size))
    lr = learning_rate(step, base=run["base_lr"] * budget.batch_size / 256, warmup_steps=budget.warmup_steps,
                       total_steps=budget.total_steps)
    weight_decay = cosine_rise(step, start=run["weight_decay"][0], end=run["weight_decay"][1],
                               total_steps=budget.total_steps)
    for group in training.optimizer.param_groups:
        group["lr"], group["weight_decay"] = lr, weight_decay
    training.optimizer.zero_grad(set_to_none=True)
    losses = _accumulate_gradients(forward, tensors, run["accumulate"], autocast, **options)
    torch.nn.utils.clip_grad_norm_(training.parameters, run["grad_clip"])
    training.optimizer.step()
    momentum = float("nan")
    if training.ema_pairs:
        momentum = cosine_rise(step, start=run["momentum"][0], end=run["momentum"][1], total_steps=budget.total_steps)
        for target, online in training.ema_pairs:
            ema_update(target, online, momentum)
    terms = torch.stack([losses.get(k, missing).float() for k in ("total", *training.objective.loss_terms)])
    monitors = [float("nan")] * len(MONITOR_COLUMNS)
    if monitored:
        values = collapse_monitors(training.objective.monitor_features(training.model, tensors))
        monitors = [values[name] for name in MONITOR_COLUMNS]
    logbook.add(step, lr, weight_decay, momentum, terms, monitors)


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
