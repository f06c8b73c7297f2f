"""Snakemake adapter: the cohort card, the cleaned runs' statistics beside published values (rule cohort_card)."""

import logging
from pathlib import Path

from brainscale.preprocessing.batch import TIMESERIES_SUFFIX
from brainscale.rulelog import rule_log
from brainscale.simulate.card import write_cohort_card

rule_log(snakemake.log[0])  # messages, and an error's traceback, go to the rule's log
runs = [path for folder in snakemake.input.batches for path in sorted(Path(folder).glob(f"*{TIMESERIES_SUFFIX}"))]
write_cohort_card(runs, snakemake.input.phenotypes, snakemake.output.table, snakemake.output.markdown,
                  seed=snakemake.params.seed, participants_tsv=snakemake.params.participants, log=logging.info)
