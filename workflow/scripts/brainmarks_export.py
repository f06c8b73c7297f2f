"""Snakemake adapter: the probe set as Brainmarks datasets (rule brainmarks_export)."""

import json
import logging

from brainscale.brainmarks.export import export_probe_set
from brainscale.rulelog import rule_log

rule_log(snakemake.log[0])  # messages, and an error's traceback, go to the rule's log
params = snakemake.params
summary = export_probe_set(snakemake.input.shards, snakemake.input.splits, snakemake.output[0], tasks=params.tasks,
                           labels_config=params.labels, proportions=params.proportions, split_seed=params.split_seed,
                           split_task=params.split_task, frames=params.frames,
                           repetition_time=params.repetition_time, log=logging.info)
logging.info("export: %s", json.dumps(summary))
