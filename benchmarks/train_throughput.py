"""Benchmark: pretraining step throughput of the Brain-Semantoks model, against the hardware limit.

Times full self-distillation steps (student forward + backward on two views, teacher forward,
gradient clipping, AdamW, EMA) on random data and reports samples/s, step time, achieved TFLOP/s,
MFU and peak memory for several recipes in the same invocation:

  reference            the reference implementation's recipe: attention as an explicit
                       softmax(q k^T / sqrt(d)) v, fp16 autocast + GradScaler;
  brainscale           this project's: bf16 autocast, ``models.layers._attention`` (flash-attn
                       when the package is installed, else PyTorch's SDPA with its own kernel choice);
  brainscale-compile   the same under ``torch.compile``;
  sdpa-flash           bf16 with SDPA held to its flash backend (no flash-attn package);
  sdpa-flash-compile   the same under ``torch.compile``;
  flash-attn           bf16 with the flash-attn package (skipped when it is not installed).

On CPU every recipe runs in fp32 and only the attention kernel differs. FLOPs are counted
analytically per sample (multiply-add = 2 FLOPs): tokenizers (dense conv, long conv, projection
per time step), transformer (qkv, projection, MLP: 24 L D^2 per layer for L tokens, plus
4 L^2 D for attention scores and weighted sums), projection heads (CLS, network features and, as
the loss computes them, every patch token). A step costs 3x the student's forward (forward +
backward) plus 1x the teacher's, for two views. MFU divides achieved FLOP/s by the device's dense
bf16 peak, measured in the same run as the mean rate of an 8192^3 bf16 matrix product (or given
with ``--peak-tflops``). ``--profile`` writes a torch profiler summary (device time by op, and the
share of the profiled wall time the GPU was busy) of one recipe. ``--json`` writes every result.

    python benchmarks/train_throughput.py --model tiny --batch 64 --steps 5 --device cpu
    python benchmarks/train_throughput.py --model base --batch 512 --steps 20 --device cuda \\
        --recipes reference brainscale brainscale-compile sdpa-flash --profile brainscale --out results/gpu
"""

from __future__ import annotations

import argparse
import json
import math
import time
from contextlib import nullcontext
from pathlib import Path

import torch
import torch.nn.functional as F

from brainscale.models import layers
from brainscale.objectives.semantoks.distillation import SelfDistillation
from brainscale.objectives.semantoks.masking import slice_masks
from brainscale.objectives.semantoks.model import SemantoksEncoder
from brainscale.objectives.semantoks.spec import MODEL_SIZES, SemantoksConfig
from brainscale.training.schedules import ema_update

PROJECT_ATTENTION = layers._attention


def explicit_attention(q, k, v):
    weights = torch.softmax((q @ k.transpose(-2, -1)) * q.shape[-1] ** -0.5, dim=-1)
    return weights @ v


def sdpa_flash_attention(q, k, v):
    from torch.nn.attention import SDPBackend, sdpa_kernel

    with sdpa_kernel(SDPBackend.FLASH_ATTENTION):
        return F.scaled_dot_product_attention(q, k, v)


def flash_attn_attention(q, k, v):
    from flash_attn import flash_attn_func

    return flash_attn_func(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)).transpose(1, 2)


#: recipe -> (attention, half-precision dtype on CUDA, GradScaler, torch.compile)
RECIPES = {
    "reference": (explicit_attention, torch.float16, True, False),
    "brainscale": (PROJECT_ATTENTION, torch.bfloat16, False, False),
    "brainscale-compile": (PROJECT_ATTENTION, torch.bfloat16, False, True),
    "sdpa-flash": (sdpa_flash_attention, torch.bfloat16, False, False),
    "sdpa-flash-compile": (sdpa_flash_attention, torch.bfloat16, False, True),
    "flash-attn": (flash_attn_attention, torch.bfloat16, False, False),
}


def forward_flops_per_sample(config: SemantoksConfig) -> float:
    width, half, length = config.width, config.width // 2, config.patch_length
    taps = config.long_conv_kernel * (2 ** (config.long_conv_scales - 1))
    tokenizers = 0.0
    for network in range(config.n_networks):
        rois = config.network_map.count(network)
        heads = math.ceil(half / rois)
        per_patch = 2 * rois * 3 * half * length + 2 * rois * heads * (taps + 1) * length \
            + 2 * heads * rois * half * length
        tokenizers += per_patch * config.n_patches
    tokens = 1 + config.n_networks * config.n_patches
    hidden = config.mlp_ratio * width
    per_layer = 2 * tokens * (3 * width * width + width * width + 2 * width * hidden) + 4 * tokens * tokens * width
    head = 2 * (width * config.head_hidden + config.head_hidden * config.head_output)
    heads = head * (1 + config.n_networks + config.n_networks * config.n_patches)  # CLS, networks, tokens
    return tokenizers + config.depth * per_layer + heads


def measure_matmul_peak(device: torch.device, size: int = 8192, repeats: int = 10) -> float:
    """Mean TFLOP/s of a size^3 bf16 matrix product on ``device`` (after three warm-ups)."""
    generator = torch.Generator(device=device).manual_seed(0)
    a = torch.randn(size, size, device=device, dtype=torch.bfloat16, generator=generator)
    b = torch.randn(size, size, device=device, dtype=torch.bfloat16, generator=generator)
    for _ in range(3):
        a @ b
    torch.cuda.synchronize()
    started = time.perf_counter()
    for _ in range(repeats):
        a @ b
    torch.cuda.synchronize()
    return 2 * size**3 * repeats / (time.perf_counter() - started) / 1e12


def make_step(recipe: str, args, config: SemantoksConfig, device: torch.device):
    """The model and a closure taking one full training step of ``recipe`` (no host sync inside)."""
    attention, half, scaled, compiled = RECIPES[recipe]
    layers._attention = attention
    cuda = device.type == "cuda"
    torch.manual_seed(0)
    model = SelfDistillation(config).to(device)
    parameters = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(parameters, lr=1e-4, fused=cuda and recipe != "reference")  # as the loop
    autocast = torch.autocast("cuda", dtype=half) if cuda else nullcontext()
    scaler = torch.amp.GradScaler("cuda") if cuda and scaled else None
    forward = torch.compile(model) if compiled else model
    generator = torch.Generator().manual_seed(0)
    views = torch.randn(2, args.batch, config.n_channels, config.crop_length, generator=generator).to(device)
    missing = torch.zeros(args.batch, config.n_channels, dtype=torch.bool, device=device)
    masks = torch.stack([slice_masks(args.batch, config.n_networks, config.n_patches, generator=generator)
                         for _ in range(2)]).to(device)

    def step():
        with autocast:
            loss = forward(views, missing, masks, network_weight=0.5, mask_weight=0.5)["total"]
        optimizer.zero_grad(set_to_none=True)
        if scaler is not None:
            scaler.scale(loss).backward()
            scaler.unscale_(optimizer)
            torch.nn.utils.clip_grad_norm_(parameters, 1.0)
            scaler.step(optimizer)
            scaler.update()
        else:
            loss.backward()
            torch.nn.utils.clip_grad_norm_(parameters, 1.0)
            optimizer.step()
        ema_update(model.teacher_modules(), model.student_modules(), 0.996)

    return model, step


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def run(recipe: str, args, config: SemantoksConfig, peak_tflops: float | None) -> dict:
    device = torch.device(args.device)
    _, step = make_step(recipe, args, config, device)
    started = time.perf_counter()
    for _ in range(args.warmup):  # compilation happens here
        step()
    synchronize(device)
    warmup_s = time.perf_counter() - started
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    started = time.perf_counter()
    for _ in range(args.steps):
        step()
    synchronize(device)
    seconds = (time.perf_counter() - started) / args.steps
    flops = 2 * args.batch * forward_flops_per_sample(config) * (3 + 1)  # two views; student 3x, teacher 1x
    result = {"recipe": recipe, "model": args.model, "batch": args.batch, "device": args.device,
              "step_s": seconds, "samples_per_s": args.batch / seconds, "tflops": flops / seconds / 1e12,
              "warmup_s": warmup_s,
              "peak_memory_gb": torch.cuda.max_memory_allocated() / 1e9 if device.type == "cuda" else float("nan")}
    result["mfu"] = result["tflops"] / peak_tflops if peak_tflops else float("nan")
    return result


def busy_time_us(events) -> float:
    """Microseconds in which at least one GPU kernel or copy ran (the union of their intervals)."""
    from torch.autograd import DeviceType

    intervals = sorted((e.time_range.start, e.time_range.end) for e in events if e.device_type == DeviceType.CUDA)
    busy, reach = 0.0, float("-inf")
    for start, end in intervals:
        if end > reach:
            busy += end - max(start, reach)
            reach = end
    return busy


def profile(recipe: str, args, config: SemantoksConfig, path: Path) -> dict:
    """Write a profiler summary of ``args.profile_steps`` steps of ``recipe``; return its GPU-busy share."""
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as profiler

    device = torch.device(args.device)
    _, step = make_step(recipe, args, config, device)
    for _ in range(args.warmup):
        step()
    synchronize(device)
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with profiler(activities=activities) as trace:
        started = time.perf_counter()
        for _ in range(args.profile_steps):
            step()
        synchronize(device)
        wall_us = (time.perf_counter() - started) * 1e6
    averages = trace.key_averages()
    sort_key = "self_cuda_time_total" if device.type == "cuda" else "self_cpu_time_total"
    kernel_us = busy_time_us(trace.events()) if device.type == "cuda" else float("nan")
    busy = kernel_us / wall_us
    path.write_text(f"# {recipe}, {args.model}, batch {args.batch}, {args.profile_steps} steps on {args.device}\n"
                    f"# wall {wall_us / 1e3:.1f} ms, a kernel running during {kernel_us / 1e3:.1f} ms: GPU busy {busy:.1%}\n"
                    + averages.table(sort_by=sort_key, row_limit=40) + "\n")
    return {"recipe": recipe, "wall_ms": wall_us / 1e3, "kernel_ms": kernel_us / 1e3, "gpu_busy": busy}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", choices=sorted(MODEL_SIZES), default="tiny")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--peak-tflops", type=float, default=None,
                        help="the device's dense bf16 peak; measured with an 8192^3 product on CUDA when omitted")
    parser.add_argument("--recipes", nargs="+", default=["reference", "brainscale"], choices=sorted(RECIPES))
    parser.add_argument("--profile", choices=sorted(RECIPES), help="write a profiler summary of this recipe")
    parser.add_argument("--profile-steps", type=int, default=3)
    parser.add_argument("--out", type=Path, help="folder for results.json and the profile summary")
    args = parser.parse_args()
    config = SemantoksConfig(**MODEL_SIZES[args.model])
    device = torch.device(args.device)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"cpu, {torch.get_num_threads()} threads"
    peak = args.peak_tflops or (measure_matmul_peak(device) if device.type == "cuda" else None)
    print(f"model {args.model}: {sum(p.numel() for p in SemantoksEncoder(config).parameters()) / 1e6:.1f}M "
          f"encoder parameters, {forward_flops_per_sample(config) / 1e9:.2f} GFLOP forward per crop; batch "
          f"{args.batch} on {name}, torch {torch.__version__}" + (f"; bf16 matmul peak {peak:.0f} TFLOP/s" if peak else ""),
          flush=True)
    results = []
    for recipe in args.recipes:
        if recipe == "flash-attn" and layers._flash_attn() is None:
            print("  flash-attn: skipped (the flash_attn package is not installed)")
            continue
        try:
            results.append(run(recipe, args, config, peak))  # the recipe's model and optimizer are freed on return
        except Exception as error:  # one recipe failing (a compile error, memory) must not lose the others
            print(f"  {recipe}: failed: {type(error).__name__}: {str(error).splitlines()[0][:300]}")
        layers._attention = PROJECT_ATTENTION
        if device.type == "cuda":
            torch.cuda.empty_cache()
        if results and results[-1]["recipe"] == recipe:
            r, baseline = results[-1], results[0]
            print(f"  {recipe:19s} step {r['step_s']:.3f} s  {r['samples_per_s']:8.1f} samples/s  "
                  f"{r['tflops']:7.2f} TFLOP/s  MFU {r['mfu']:.1%}  peak {r['peak_memory_gb']:.1f} GB  "
                  f"warm-up {r['warmup_s']:.0f} s  x{r['samples_per_s'] / baseline['samples_per_s']:.2f} vs "
                  f"{baseline['recipe']}", flush=True)
    summary = {"device": name, "torch": str(torch.__version__), "peak_tflops": peak, "results": results}
    if args.profile:
        if args.out is None:
            parser.error("--profile needs --out")
        args.out.mkdir(parents=True, exist_ok=True)
        summary["profile"] = profile(args.profile, args, config, args.out / f"profile-{args.profile}.txt")
        layers._attention = PROJECT_ATTENTION
        print(f"  profile of {args.profile}: GPU busy {summary['profile']['gpu_busy']:.1%} of the wall time "
              f"({args.out / f'profile-{args.profile}.txt'})")
    if args.out is not None:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "throughput.json").write_text(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main()
