"""Snakemake adapter: the simulator's ground truth of the probe subjects (rule oracle_features)."""

import logging
from pathlib import Path

from brainscale.probing.baselines import oracle_features
from brainscale.probing.embeddings import probe_subjects, write_features

logging.basicConfig(filename=snakemake.log[0], level=logging.INFO, format="%(asctime)s %(message)s")
dataset = Path(snakemake.input.simulation)
table = oracle_features(dataset / "ground_truth" / "latents.tsv", dataset / "fmriprep" / "participants.tsv",
                        probe_subjects(snakemake.input.splits))
write_features(snakemake.output[0], table)
