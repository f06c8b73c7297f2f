"""Snakemake adapter: preprocess one batch of runs (rule preprocess_batch)."""

import logging

from brainscale.preprocessing.batch import preprocess_batch
from brainscale.preprocessing.discovery import load_participants
from brainscale.rulelog import rule_log

rule_log(snakemake.log[0])  # messages, and an error's traceback, go to the rule's log
log = logging.getLogger("preprocess_batch").info
participants = load_participants(snakemake.params.participants, snakemake.params.phenotypes).index
preprocess_batch(snakemake.params.runs, snakemake.params.atlases, snakemake.params.settings, snakemake.output[0],
                 space=snakemake.params.space, participants=participants, surface=snakemake.params.surface, log=log)
