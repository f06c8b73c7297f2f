"""Snakemake adapter: scaling and layer-wise tables and figures (rule scaling_figure)."""

import logging

from brainscale.probing.scaling import pretraining_hours, write_scaling_outputs
from brainscale.rulelog import rule_log

rule_log(snakemake.log[0])  # messages, and an error's traceback, go to the rule's log
hours = pretraining_hours(snakemake.params.encoder_sources, snakemake.input.shards, snakemake.input.splits,
                          snakemake.params.repetition_time)
write_scaling_outputs(snakemake.input.metrics, snakemake.params.sources, dict(snakemake.output.items()),
                      encoder_files=list(snakemake.input.encoders), encoder_sources=snakemake.params.encoder_sources,
                      reference_model=snakemake.params.reference_model, hours=hours,
                      n_boot=snakemake.params.bootstrap, seed=snakemake.params.seed, log=logging.info)
