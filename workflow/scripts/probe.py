"""Snakemake adapter: linear probes of one source's features (rule probe)."""

import logging

from brainscale.probing.probes import run_probe_rule

logging.basicConfig(filename=snakemake.log[0], level=logging.INFO, format="%(asctime)s %(message)s")
try:
    run_probe_rule(snakemake.input.features, snakemake.input.shards, snakemake.params.settings,
                   snakemake.params.labels, snakemake.params.proportions, snakemake.output.metrics,
                   snakemake.output.predictions, log=logging.info)
except Exception as error:  # the rule's log names the problem, not only the job's stderr
    logging.error("%s", error)
    raise
