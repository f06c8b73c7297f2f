"""Snakemake adapter: linear probes of one source's features (rule probe)."""

import logging
from pathlib import Path

from brainscale.probing.probes import run_probe_rule
from brainscale.rulelog import rule_log

rule_log(snakemake.log[0])  # messages, and an error's traceback, go to the rule's log
# the simulated dataset folder when the latent tasks are on (input latents), else none
latents = Path(snakemake.input.latents) / "ground_truth" / "latents.tsv" if snakemake.input.latents else None
run_probe_rule(snakemake.input.features, snakemake.input.shards, snakemake.params.settings,
               snakemake.params.labels, snakemake.params.proportions, snakemake.output.metrics,
               snakemake.output.predictions, latents=latents, log=logging.info)
