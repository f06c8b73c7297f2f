"""Benchmark: frozen-encoder feature extraction on CPU (crops per second).

Encodes the 8 evenly spaced evaluation crops of every run of the demo's probe subjects
(``results/shards``, ``results/splits``) with a randomly initialised encoder (weights do not
change the cost) and reports crops/s for two recipes, measured in the same invocation:

  reference   what the reference evaluation does: a DataLoader over single crops, each read
              from HDF5 on its own, ``torch.no_grad``, attention as an explicit
              softmax(q k^T / sqrt(d)) v, the last layer's ``cls_avg`` only;
  brainscale  ``brainscale.probing.embeddings.extract_embeddings``: each run read once and cut
              in memory, identical crops encoded once, ``torch.inference_mode``, PyTorch's
              scaled_dot_product_attention, CLS and token mean of every layer.

It also reports the largest difference between the two recipes' last-layer ``cls_avg``
features, and the rate that the transformer's matrix products alone allow at the machine's
measured fp32 matrix-multiply throughput (an upper bound for any exact fp32 implementation).

    python benchmarks/embedding.py --model base --batch 64 --threads 2
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
from torch.utils.data import DataLoader

from brainscale.models import layers
from brainscale.objectives.semantoks.model import SemantoksEncoder
from brainscale.objectives.semantoks.spec import MODEL_SIZES, SemantoksConfig
from brainscale.probing.embeddings import extract_embeddings, probe_dataset
from brainscale.objectives.base import network_map_of

ORIGINAL_ATTENTION = layers._attention


def manual_attention(q, k, v):
    weights = torch.softmax((q @ k.transpose(-2, -1)) * q.shape[-1] ** -0.5, dim=-1)
    return weights @ v


def reference_recipe(encoder, dataset, batch: int) -> tuple[float, np.ndarray]:
    layers._attention = manual_attention
    loader = DataLoader(dataset, batch_size=batch, shuffle=False, num_workers=0)
    features = []
    started = time.perf_counter()
    with torch.no_grad():
        for x, missing, _ in loader:
            features.append(SemantoksEncoder.cls_avg(encoder(x, missing_channels=missing)).numpy())
    seconds = time.perf_counter() - started
    layers._attention = ORIGINAL_ATTENTION
    return seconds, np.concatenate(features)


def brainscale_recipe(encoder, dataset, batch: int) -> tuple[float, np.ndarray]:
    started = time.perf_counter()
    table = extract_embeddings(encoder, dataset, batch_size=batch)
    return time.perf_counter() - started, table.matrix("cls_avg")


def matmul_bound(config: SemantoksConfig, batch: int) -> float:
    """Crops/s allowed by the transformer's linear layers at the measured fp32 GEMM rate."""
    tokens = batch * (1 + config.n_networks * config.n_patches)
    a, b = torch.randn(tokens, config.width), torch.randn(config.width, 4 * config.width)
    a @ b
    started = time.perf_counter()
    for _ in range(5):
        a @ b
    flops_per_s = 5 * 2 * tokens * config.width * 4 * config.width / (time.perf_counter() - started)
    hidden = int(config.mlp_ratio * config.width)
    per_crop = config.depth * 2 * (1 + config.n_networks * config.n_patches) * (
        4 * config.width ** 2 + 2 * config.width * hidden)
    return flops_per_s / per_crop


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shards", default="results/shards")
    parser.add_argument("--splits", default="results/splits")
    parser.add_argument("--model", choices=sorted(MODEL_SIZES), default="base")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    config = SemantoksConfig(**MODEL_SIZES[args.model], network_map=network_map_of(args.shards))
    encoder = SemantoksEncoder(config).eval()
    dataset = probe_dataset(args.shards, args.splits, crop_length=config.crop_length, n_crops=8)
    crops = len(dataset)
    print(f"{args.model} encoder fp32, batch {args.batch}, {args.threads} threads: {len(dataset.runs)} runs, "
          f"{crops} crops")
    extract_embeddings(encoder, probe_dataset(args.shards, args.splits, n_crops=1), batch_size=args.batch)  # warm-up
    rates = {}
    for recipe, function in (("reference", reference_recipe), ("brainscale", brainscale_recipe)):
        best = min((function(encoder, dataset, args.batch) for _ in range(args.repeats)), key=lambda r: r[0])
        rates[recipe] = crops / best[0]
        rates[f"{recipe}_features"] = best[1]
        print(f"{recipe:11s} {rates[recipe]:7.1f} crops/s ({best[0]:.1f} s)")
    difference = np.abs(rates["reference_features"] - rates["brainscale_features"]).max()
    print(f"brainscale / reference: x{rates['brainscale'] / rates['reference']:.2f}; "
          f"largest feature difference {difference:.1e}")
    print(f"bound from the transformer's matrix products at this machine's fp32 GEMM rate: "
          f"{matmul_bound(config, args.batch):.1f} crops/s")


if __name__ == "__main__":
    main()
