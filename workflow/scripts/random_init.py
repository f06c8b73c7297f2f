"""Snakemake adapter: a randomly initialised encoder, the random-init baseline (rule random_init)."""

import logging

from brainscale.probing.checkpoints import write_random_encoder
from brainscale.training.loop import network_map_of

logging.basicConfig(filename=snakemake.log[0], level=logging.INFO, format="%(asctime)s %(message)s")
seed = int(snakemake.wildcards.seed)
write_random_encoder(snakemake.params.settings, network_map_of(snakemake.input.shards), seed, snakemake.output[0])
logging.info("random %s encoder of seed %d written", snakemake.wildcards.model, seed)
