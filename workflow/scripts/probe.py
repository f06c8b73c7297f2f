"""Snakemake adapter: linear probes of one source's features (rule probe)."""

import logging
from pathlib import Path

from brainscale.probing.probes import run_probe_rule

logging.basicConfig(filename=snakemake.log[0], level=logging.INFO, format="%(asctime)s %(message)s")
# the simulated dataset folder when the latent tasks are on (input latents), else none
latents = Path(snakemake.input.latents) / "ground_truth" / "latents.tsv" if snakemake.input.latents else None
try:
    run_probe_rule(snakemake.input.features, snakemake.input.shards, snakemake.params.settings,
                   snakemake.params.labels, snakemake.params.proportions, snakemake.output.metrics,
                   snakemake.output.predictions, latents=latents, log=logging.info)
except Exception as error:  # the rule's log names the problem, not only the job's stderr
    logging.error("%s", error)
    raise
