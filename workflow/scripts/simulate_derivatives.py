"""Snakemake adapter: write the synthetic derivatives dataset (rule simulate_derivatives)."""

import logging

from brainscale.simulate import simulate_dataset
from brainscale.rulelog import rule_log

rule_log(snakemake.log[0])  # messages, and an error's traceback, go to the rule's log
simulate_dataset(snakemake.params.settings, snakemake.output[0], n_jobs=snakemake.threads, overwrite=True,
                 log=logging.getLogger("simulate_derivatives").info)
