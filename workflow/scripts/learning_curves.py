"""Snakemake adapter: every run's held-out and own-subset loss against samples seen (rule learning_curves)."""

import logging

from brainscale.plotting.training import plot_learning_curves
from brainscale.rulelog import rule_log

rule_log(snakemake.log[0])  # messages, and an error's traceback, go to the rule's log
logs = {tuple(key): path for key, path in zip(snakemake.params.runs, snakemake.input.logs)}
plot_learning_curves(logs, [snakemake.output.png, snakemake.output.pdf])
logging.info("learning curves of %d runs", len(logs))
