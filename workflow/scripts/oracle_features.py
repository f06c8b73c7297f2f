"""Snakemake adapter: the simulator's ground truth of the probe subjects (rule oracle_features)."""

from pathlib import Path

from brainscale.probing.baselines import oracle_features
from brainscale.probing.embeddings import probe_subjects, write_features
from brainscale.rulelog import rule_log

rule_log(snakemake.log[0])  # messages, and an error's traceback, go to the rule's log
dataset = Path(snakemake.input.simulation)
table = oracle_features(dataset / "ground_truth" / "latents.tsv", dataset / "fmriprep" / "participants.tsv",
                        probe_subjects(snakemake.input.splits))
write_features(snakemake.output[0], table)
