"""Snakemake adapter: network_mapping.npz and the channel table (rule network_mapping)."""

import logging

from brainscale.preprocessing.batch import write_network_mapping
from brainscale.rulelog import rule_log

rule_log(snakemake.log[0])  # messages, and an error's traceback, go to the rule's log
write_network_mapping(snakemake.params.atlases, snakemake.output.mapping, snakemake.output.channels,
                      surface=snakemake.params.surface)
logging.info("wrote %s", snakemake.output.mapping)
