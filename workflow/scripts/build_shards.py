"""Snakemake adapter: shard every included run (rule build_shards).

Stops before writing anything, with the exclusion reasons and their counts, when no run was included.
"""

import logging
from pathlib import Path

import pandas as pd

from brainscale.preprocessing.batch import TIMESERIES_SUFFIX
from brainscale.preprocessing.pipeline import require_included_runs
from brainscale.rulelog import rule_log
from brainscale.shards.writer import write_shards

rule_log(snakemake.log[0])  # messages, and an error's traceback, go to the rule's log
qc = pd.concat([pd.read_csv(Path(folder) / "qc.tsv", sep="\t", na_values=["n/a"])
                for folder in snakemake.input.batches], ignore_index=True)
require_included_runs(qc, where="results/qc/runs.tsv (rule qc_report; per batch results/preprocess/batch-*/qc.tsv)")
runs = sorted(str(p) for folder in snakemake.input.batches for p in Path(folder).glob(f"*{TIMESERIES_SUFFIX}"))
phenotypes = pd.read_csv(snakemake.input.phenotypes, sep="\t", na_values=["n/a"], index_col="participant_id")
manifest = write_shards(runs, phenotypes, snakemake.input.network_mapping, snakemake.params.settings,
                        snakemake.output[0], config=snakemake.params.config, log=logging.info)
logging.info("%d runs of %d subjects in %d shards", manifest["n_runs"], manifest["n_subjects"], len(manifest["shards"]))
