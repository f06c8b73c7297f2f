"""Diagnostic: how much the exported encoders' tokens still differ, within a crop and between crops.

For each ``encoder.pt`` given, one evaluation crop of each of the first ``--crops`` probe-test
subjects is encoded; on the last layer's tokens (CLS left out) after a LayerNorm without affine:

- token spread: the standard deviation across the tokens of a crop, per feature, averaged (1 would
  be tokens as different as the features of one token; 0: every token of a crop the same);
- crop spread: the standard deviation across crops of the token mean, per feature, averaged.

A JEPA-style objective whose target encoder collapses shows both falling against its random init
while its loss falls. Run from a workflow directory after ``snakemake``:

    python benchmarks/token_collapse.py results/baselines/random/jepa-tiny_seed-21/encoder.pt \\
        results/pretrain/jepa-tiny/n-128_seed-0/encoder.pt
"""

from __future__ import annotations

import argparse

import numpy as np
import torch
import torch.nn.functional as F

from brainscale.shards.reader import ShardDataset, shard_paths
from brainscale.export import load_encoder


def spreads(path: str, shards: str, subjects) -> tuple[float, float]:
    encoder = load_encoder(path)
    dataset = ShardDataset(shard_paths(shards), subjects, crop_length=encoder.config.crop_length, crops="eval",
                           n_eval_crops=1)
    x = torch.stack([dataset[i][0] for i in range(len(dataset))])
    missing = torch.stack([dataset[i][1] for i in range(len(dataset))])
    with torch.no_grad():
        tokens = encoder(x, missing_channels=missing)
    if getattr(encoder, "has_cls", True):
        tokens = tokens[:, 1:]
    tokens = F.layer_norm(tokens, tokens.shape[-1:])
    return tokens.std(dim=1).mean().item(), tokens.mean(dim=1).std(dim=0).mean().item()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("encoders", nargs="+")
    parser.add_argument("--shards", default="results/shards")
    parser.add_argument("--splits", default="results/splits")
    parser.add_argument("--crops", type=int, default=16)
    args = parser.parse_args()
    subjects = np.load(f"{args.splits}/probe_test.npy").astype(str)[:args.crops]
    for path in args.encoders:
        within, between = spreads(path, args.shards, subjects)
        print(f"{path:70s} token spread {within:.3f}  crop spread {between:.3f}")


if __name__ == "__main__":
    main()
