"""Benchmark: training-step throughput of every objective, through the training loop's interface.

Each run name (objective-size) is timed on real shards over the same steps the loop takes:
the objective's DataLoader items (views and masks drawn in the dataset), ``prepare``, forward
and backward, gradient clipping, AdamW and the EMA update where the objective has one. The
first run name is the baseline of the ratios (all measured in the same invocation). Data
loading is included (it runs in the main process, as in the demo: ``num_workers: 0``).

    python benchmarks/objective_throughput.py --shards results/shards --runs semantoks-tiny jepa-tiny mae-tiny
    python benchmarks/objective_throughput.py --shards results/shards --runs semantoks-base jepa-base mae-base \\
        --batch 32 --device cuda
"""

from __future__ import annotations

import argparse
import time
from contextlib import nullcontext
from pathlib import Path

import numpy as np
import torch

from brainscale.config import validate_config
from brainscale.objectives import get_objective, run_spec
from brainscale.objectives.base import PretrainingData, Step
from brainscale.training.budget import BatchStream, training_budget
from brainscale.training.schedules import ema_update


def time_run(run: str, args) -> dict:
    section = dict(validate_config({})["pretrain"], batch_size=args.batch, device=args.device,
                   objectives=[run], budget=dict(unit="steps", total=args.warmup + args.steps, warmup=1,
                                                 checkpoint_every=10**6),
                   options={"semantoks": {"network_decay": 1}} if run.startswith("semantoks-") else {})
    spec = run_spec(section, run)
    settings = spec.training
    subjects = tuple(np.load(Path(args.splits) / f"pretrain_n-{args.subjects}_seed-0.npy").astype(str))
    data = PretrainingData(Path(args.shards), subjects, settings["seed"])
    objective = get_objective(spec.objective)(spec, data)
    dataset = objective.dataset()
    device = torch.device(args.device)
    torch.manual_seed(0)
    model = objective.build().to(device)
    parameters = [p for p in model.trainable_modules().parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(parameters, lr=1e-4)
    budget = training_budget(settings["budget"], batch_size=args.batch, subset_size=len(subjects))
    stream = BatchStream(budget, settings["seed"])
    loader = torch.utils.data.DataLoader(dataset, batch_sampler=stream.shares(range(budget.total_steps), 0,
                                                                               args.batch))
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else nullcontext()
    times = []
    for step, batch in enumerate(loader):
        if device.type == "cuda":
            torch.cuda.synchronize()
        started = time.perf_counter()
        tensors, options = objective.prepare(batch, Step(step=step, budget=budget, device=device,
                                                         positions=list(range(args.batch)), global_batch=args.batch,
                                                         seed=settings["seed"]))
        with autocast:
            loss = model(*tensors, **options)["total"]
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(parameters, 1.0)
        optimizer.step()
        for target, online in model.ema_pairs():
            ema_update(target, online, 0.996)
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - started)
    seconds = float(np.mean(times[args.warmup:]))
    encoder_parameters = sum(p.numel() for p in model.encoder.parameters())
    return {"run": run, "step_s": seconds, "samples_per_s": args.batch / seconds,
            "parameters_m": encoder_parameters / 1e6}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shards", default="results/shards")
    parser.add_argument("--splits", default="results/splits")
    parser.add_argument("--subjects", type=int, default=128, help="the pretraining subset size whose split to read")
    parser.add_argument("--runs", nargs="+", default=["semantoks-tiny", "jepa-tiny", "mae-tiny"])
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"batch {args.batch} on {args.device}, {torch.get_num_threads()} threads, {args.steps} timed steps")
    results = [time_run(run, args) for run in args.runs]
    baseline = results[0]
    for r in results:
        print(f"  {r['run']:16s} {r['parameters_m']:7.2f}M encoder  step {r['step_s']:.3f} s  "
              f"{r['samples_per_s']:8.1f} samples/s  x{r['samples_per_s'] / baseline['samples_per_s']:.2f} "
              f"vs {baseline['run']}")


if __name__ == "__main__":
    main()
