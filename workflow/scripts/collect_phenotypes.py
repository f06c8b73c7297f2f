"""Snakemake adapter: the configured phenotypes under their pipeline names (rule collect_phenotypes)."""

import logging

from brainscale.io import write_text_atomic
from brainscale.preprocessing.discovery import load_participants
from brainscale.rulelog import rule_log

rule_log(snakemake.log[0])  # messages, and an error's traceback, go to the rule's log
table = load_participants(snakemake.params.participants, snakemake.params.phenotypes)
write_text_atomic(snakemake.output[0], table.to_csv(sep="\t", na_rep="n/a"))
logging.info("%d participants, phenotypes %s", len(table), list(table.columns))
