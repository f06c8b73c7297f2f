"""Snakemake adapter: a randomly initialised encoder, the random-init baseline (rule random_init)."""

import logging

from brainscale.probing.checkpoints import write_random_encoder
from brainscale.training.loop import network_map_of
from brainscale.rulelog import rule_log

rule_log(snakemake.log[0])  # messages, and an error's traceback, go to the rule's log
seed = int(snakemake.wildcards.seed)
write_random_encoder(snakemake.params.settings, network_map_of(snakemake.input.shards), seed, snakemake.output[0])
logging.info("random %s encoder of seed %d written", snakemake.wildcards.model, seed)
