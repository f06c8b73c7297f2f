"""Benchmark: crops per second from the shards through a PyTorch DataLoader.

Reads the demo's shards (``results/shards``) with ``ShardDataset`` (random 100-TR crops, one
subject per item) through ``DataLoader(batch_size=...)`` with 0, 1 and 2 workers, and with
everything preloaded in memory (0 workers), over several epochs. The baseline is the lazy
reader with 0 workers, measured in the same invocation.

    python benchmarks/reader.py --shards results/shards --epochs 20 --batch-size 64
"""

from __future__ import annotations

import argparse
import os
import time

import torch
from torch.utils.data import DataLoader

from brainscale.shards.reader import ShardDataset, shard_paths


def crops_per_second(dataset: ShardDataset, workers: int, epochs: int, batch_size: int) -> float:
    loader = DataLoader(dataset, batch_size=batch_size, num_workers=workers, shuffle=True,
                        persistent_workers=workers > 0, generator=torch.Generator().manual_seed(0))
    count = 0
    started = time.perf_counter()
    for epoch in range(epochs):
        dataset.set_epoch(epoch)
        for x, _, _ in loader:
            count += len(x)
    return count / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shards", default="results/shards")
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--batch-size", type=int, default=64)
    args = parser.parse_args()
    paths = shard_paths(args.shards)
    print(f"{len(paths)} shard(s) in {args.shards}, {os.cpu_count()} cores, {args.epochs} epochs, "
          f"batch {args.batch_size}")
    baseline = None
    for label, workers, preload in (("lazy, 0 workers", 0, False), ("lazy, 1 worker", 1, False),
                                    ("lazy, 2 workers", 2, False), ("preloaded, 0 workers", 0, True)):
        dataset = ShardDataset(paths, seed=0, preload=preload)
        rate = crops_per_second(dataset, workers, args.epochs, args.batch_size)
        baseline = baseline or rate
        print(f"  {label:22s} {rate:9.0f} crops/s   x{rate / baseline:5.2f}")


if __name__ == "__main__":
    main()
