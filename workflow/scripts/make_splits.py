"""Snakemake adapter: probe split and nested pretraining subsets (rule make_splits)."""

import logging

from brainscale.shards.reader import shard_paths, subjects_from_shards
from brainscale.shards.splits import write_splits
from brainscale.rulelog import rule_log

rule_log(snakemake.log[0])  # messages, and an error's traceback, go to the rule's log
subjects = subjects_from_shards(shard_paths(snakemake.input[0]), labels=snakemake.params.labels)
summary = write_splits(subjects, snakemake.params.settings, snakemake.output[0])
logging.info("splits: %s", summary)
