"""Snakemake adapter: write the synthetic derivatives dataset (rule simulate_derivatives)."""

import logging

from brainscale.simulate import simulate_dataset

logging.basicConfig(filename=snakemake.log[0], level=logging.INFO, format="%(asctime)s %(message)s")
simulate_dataset(snakemake.params.settings, snakemake.output[0], n_jobs=snakemake.threads, overwrite=True,
                 log=logging.getLogger("simulate_derivatives").info)
