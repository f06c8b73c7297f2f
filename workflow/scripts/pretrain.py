"""Snakemake adapter: pretrain one model on one subset (rule pretrain); torchrun when several GPUs."""

import logging

import torch

from brainscale.objectives import RunSpec
from brainscale.rulelog import rule_log
from brainscale.training.launch import launch_pretraining

rule_log(snakemake.log[0])  # messages, and an error's traceback, go to the rule's log
torch.set_num_threads(snakemake.threads)
launch_pretraining(RunSpec.from_dict(snakemake.params.run), snakemake.input.shards, snakemake.params.subjects,
                   snakemake.output.encoder.rsplit("/", 1)[0], processes=snakemake.params.processes,
                   splits_dir=snakemake.input.splits,
                   log=logging.info, log_file=snakemake.log[0])
