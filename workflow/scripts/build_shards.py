"""Snakemake adapter: shard every included run (rule build_shards)."""

import logging
from pathlib import Path

import pandas as pd

from brainscale.preprocessing.batch import TIMESERIES_SUFFIX
from brainscale.shards.writer import write_shards

logging.basicConfig(filename=snakemake.log[0], level=logging.INFO, format="%(asctime)s %(message)s")
runs = sorted(str(p) for folder in snakemake.input.batches for p in Path(folder).glob(f"*{TIMESERIES_SUFFIX}"))
phenotypes = pd.read_csv(snakemake.input.phenotypes, sep="\t", na_values=["n/a"], index_col="participant_id")
manifest = write_shards(runs, phenotypes, snakemake.input.network_mapping, snakemake.params.settings,
                        snakemake.output[0], config=snakemake.params.config, log=logging.info)
logging.info("%d runs of %d subjects in %d shards", manifest["n_runs"], manifest["n_subjects"], len(manifest["shards"]))
