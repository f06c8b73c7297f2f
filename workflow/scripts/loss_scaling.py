"""Snakemake adapter: held-out loss against pretraining data, fitted per run (rule loss_scaling)."""

import logging

from brainscale.rulelog import rule_log
from brainscale.scaling_laws import write_loss_scaling

rule_log(snakemake.log[0])  # messages, and an error's traceback, go to the rule's log
write_loss_scaling(snakemake.input.logs, [tuple(key) for key in snakemake.params.runs], snakemake.input.encoders,
                   snakemake.input.shards, snakemake.input.splits, snakemake.params.repetition_time,
                   dict(snakemake.output.items()), n_boot=snakemake.params.bootstrap, seed=snakemake.params.seed,
                   log=logging.info)
