"""Benchmark: pretraining step throughput of the Brain-Semantoks model.

Times full self-distillation steps (student forward + backward on two views, teacher forward,
optimizer step, EMA) on random data and reports samples/s, tokens/s, step time, peak memory
and model FLOPs utilisation. Two recipes, measured in the same invocation:

  brainscale  bf16 autocast on CUDA (fp32 on CPU), PyTorch scaled_dot_product_attention
              (flash-attn when installed), optional torch.compile;
  reference   fp16 autocast + GradScaler on CUDA (fp32 on CPU), attention as an explicit
              softmax(q k^T / sqrt(d)) v, as the reference implementation does without flash-attn.

FLOPs are counted analytically per sample (multiply-add = 2 FLOPs): tokenizers (dense conv,
long conv, projection per time step), transformer (qkv, projection, MLP: 24 L D^2 per layer
for L tokens, plus 4 L^2 D for attention scores and weighted sums), projection heads. A step
costs 3x the student's forward (forward + backward) plus 1x the teacher's forward, for two
views. MFU divides achieved FLOP/s by the device's dense peak (--peak-tflops; 989 for an
H100 SXM in bf16; none on CPU).

    python benchmarks/train_throughput.py --model tiny --batch 64 --steps 5 --device cpu
    python benchmarks/train_throughput.py --model base --batch 512 --steps 20 --device cuda --peak-tflops 989
"""

from __future__ import annotations

import argparse
import math
import time
from contextlib import nullcontext

import torch

from brainscale.models import semantoks
from brainscale.models.semantoks import MODEL_SIZES, SemantoksConfig
from brainscale.objectives.masking import slice_masks
from brainscale.training.distillation import SelfDistillation
from brainscale.training.schedules import ema_update


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
    heads = head * (1 + config.n_networks)  # CLS and per-network projections
    return tokenizers + config.depth * per_layer + heads


def manual_attention(q, k, v):
    weights = torch.softmax((q @ k.transpose(-2, -1)) * q.shape[-1] ** -0.5, dim=-1)
    return weights @ v


def run(recipe: str, args) -> dict:
    device = torch.device(args.device)
    torch.manual_seed(0)
    config = SemantoksConfig(**MODEL_SIZES[args.model])
    model = SelfDistillation(config).to(device)
    parameters = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(parameters, lr=1e-4)
    cuda = device.type == "cuda"
    if recipe == "reference":
        semantoks._attention = manual_attention
        autocast = torch.autocast("cuda", dtype=torch.float16) if cuda else nullcontext()
        scaler = torch.amp.GradScaler("cuda") if cuda else None
        forward = model
    else:
        semantoks._attention = ORIGINAL_ATTENTION
        autocast = torch.autocast("cuda", dtype=torch.bfloat16) if cuda else nullcontext()
        scaler = None
        forward = torch.compile(model) if args.compile else model
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

    for _ in range(args.warmup):
        step()
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    started = time.perf_counter()
    for _ in range(args.steps):
        step()
    if cuda:
        torch.cuda.synchronize()
    seconds = (time.perf_counter() - started) / args.steps
    flops = 2 * args.batch * forward_flops_per_sample(config) * (3 + 1)  # two views; student 3x, teacher 1x
    tokens = 2 * args.batch * (1 + config.n_networks * config.n_patches)
    result = {"recipe": recipe, "step_s": seconds, "samples_per_s": args.batch / seconds,
              "tokens_per_s": tokens / seconds, "tflops": flops / seconds / 1e12,
              "peak_memory_gb": torch.cuda.max_memory_allocated() / 1e9 if cuda else float("nan")}
    result["mfu"] = result["tflops"] / args.peak_tflops if args.peak_tflops else float("nan")
    return result


ORIGINAL_ATTENTION = semantoks._attention


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", choices=sorted(MODEL_SIZES), default="tiny")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--compile", action="store_true")
    parser.add_argument("--peak-tflops", type=float, default=None)
    parser.add_argument("--recipes", nargs="+", default=["reference", "brainscale"])
    args = parser.parse_args()
    config = SemantoksConfig(**MODEL_SIZES[args.model])
    print(f"model {args.model}: {sum(p.numel() for p in semantoks.SemantoksEncoder(config).parameters()) / 1e6:.1f}M "
          f"encoder parameters, {forward_flops_per_sample(config) / 1e9:.2f} GFLOP forward per crop; "
          f"batch {args.batch} on {args.device}, {torch.get_num_threads()} threads")
    results = []
    for recipe in args.recipes:
        results.append(run(recipe, args))  # the recipe's model and optimizer are freed on return
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    baseline = results[0]
    for r in results:
        print(f"  {r['recipe']:10s} step {r['step_s']:.3f} s  {r['samples_per_s']:8.1f} samples/s  "
              f"{r['tokens_per_s']:10.0f} tokens/s  {r['tflops']:7.3f} TFLOP/s  MFU {r['mfu']:.1%}  "
              f"peak {r['peak_memory_gb']:.1f} GB  x{r['samples_per_s'] / baseline['samples_per_s']:.2f} "
              f"vs {baseline['recipe']}")


if __name__ == "__main__":
    main()
