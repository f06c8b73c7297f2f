"""Snakemake adapter: a randomly initialised encoder, the random-init baseline (rule random_init)."""

import logging

import numpy as np

from brainscale.objectives import RunSpec
from brainscale.objectives.base import PretrainingData
from brainscale.probing.checkpoints import write_random_encoder
from brainscale.rulelog import rule_log

rule_log(snakemake.log[0])  # messages, and an error's traceback, go to the rule's log
seed = int(snakemake.wildcards.seed)
run = RunSpec.from_dict(snakemake.params.run)
# the data an objective may read to build its encoder (Brain-JEPA's gradients): the largest pretraining subset
data = PretrainingData(snakemake.input.shards, tuple(np.load(snakemake.params.subjects).astype(str)),
                       run.training["seed"])
write_random_encoder(run, data, seed, snakemake.output[0])
logging.info("random %s encoder of seed %d written", snakemake.wildcards.model, seed)
