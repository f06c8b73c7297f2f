"""Snakemake adapter: scaling and layer-wise tables and figures (rule scaling_figure)."""

import logging

from brainscale.probing.scaling import write_scaling_outputs
from brainscale.rulelog import rule_log

rule_log(snakemake.log[0])  # messages, and an error's traceback, go to the rule's log
write_scaling_outputs(snakemake.input.metrics, snakemake.params.sources, dict(snakemake.output.items()),
                      encoder_files=list(snakemake.input.encoders), encoder_sources=snakemake.params.encoder_sources,
                      reference_model=snakemake.params.reference_model, log=logging.info)
