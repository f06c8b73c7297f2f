"""Snakemake adapter: functional-connectivity features of the probe subjects (rule connectivity_features)."""

import logging

from brainscale.probing.baselines import connectivity_features
from brainscale.probing.embeddings import probe_dataset, write_features
from brainscale.rulelog import rule_log

rule_log(snakemake.log[0])  # messages, and an error's traceback, go to the rule's log
dataset = probe_dataset(snakemake.input.shards, snakemake.input.splits)
write_features(snakemake.output[0], connectivity_features(dataset, log=logging.info))
