"""Benchmark: parcellating BOLD runs into the three atlases in one pass.

On the demo's derivatives it times, per run and in the same invocation:
  bare load   nibabel's ``nib.load(path).get_fdata()`` of the same file (the floor);
  brainscale  ``load_bold`` + ``parcellate`` into all 457 channels (weights built once per grid,
              as a preprocessing batch does);
  nilearn     ``NiftiLabelsMasker(atlas).transform(path)`` for each of the three atlases (fitted once);
  nilearn-1   the same maskers on an image loaded once (nilearn's best case).
and checks that brainscale's numbers equal nilearn's to 1e-5.

    python benchmarks/parcellation.py --runs 20
"""

from __future__ import annotations

import argparse
import os
import time
import warnings

import nibabel as nib
import numpy as np

from brainscale.config import load_config, resolve_inputs
from brainscale.preprocessing.atlases import load_atlas_set, parcellation_weights
from brainscale.preprocessing.discovery import find_runs
from brainscale.preprocessing.pipeline import load_bold, parcellate


def timed(function):
    started = time.perf_counter()
    value = function()
    return time.perf_counter() - started, value


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="config/config.yaml")
    parser.add_argument("--runs", type=int, default=20, help="runs to time (the first N by run id)")
    args = parser.parse_args()
    from nilearn.maskers import NiftiLabelsMasker

    config = load_config(args.config)
    inputs = resolve_inputs(config)
    runs = find_runs(inputs["derivatives"], space=config["data"]["space"], task=config["data"]["task"])[: args.runs]
    atlases = load_atlas_set(inputs["atlases"])
    first = nib.load(runs[0].bold)
    voxels, weights = parcellation_weights(atlases, first, bold_space=config["data"]["space"])
    maskers = {kind: NiftiLabelsMasker(atlases.images[kind]).fit() for kind in atlases.images}
    totals = {"bare load": 0.0, "brainscale": 0.0, "nilearn": 0.0, "nilearn-1": 0.0}
    worst = 0.0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for run in runs:
            totals["bare load"] += timed(lambda: nib.load(run.bold).get_fdata())[0]
            seconds, ours = timed(lambda: parcellate(load_bold(run.bold)[1], voxels, weights))
            totals["brainscale"] += seconds
            seconds, theirs = timed(lambda: {kind: m.transform(run.bold) for kind, m in maskers.items()})
            totals["nilearn"] += seconds
            totals["nilearn-1"] += timed(lambda: [m.transform(image) for image in [nib.load(run.bold)]
                                                  for m in maskers.values()])[0]
            offset = 0
            for kind in ("cortical", "subcortical", "cerebellar"):
                labels = np.asarray(atlases.images[kind].dataobj)
                present = list(np.unique(labels[labels > 0]))
                order = [present.index(v) for v in atlases.labels[kind]]
                block = ours[:, offset:offset + len(order)]
                worst = max(worst, float(np.abs(block - theirs[kind][:, order]).max()))
                offset += len(order)
    print(f"{len(runs)} runs of {inputs['derivatives']}, {os.cpu_count()} cores; seconds per run:")
    base = totals["bare load"]
    for name, total in totals.items():
        print(f"  {name:11s} {total / len(runs):7.3f} s   x{total / base:5.2f} of bare load")
    print(f"  brainscale is x{totals['nilearn'] / totals['brainscale']:.2f} faster than nilearn "
          f"(x{totals['nilearn-1'] / totals['brainscale']:.2f} against nilearn-1); "
          f"largest difference from nilearn {worst:.2e}")


if __name__ == "__main__":
    main()
