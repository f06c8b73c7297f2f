"""Snakemake adapter: pretrain one model on one subset (rule pretrain)."""

import logging

import numpy as np
import torch

from brainscale.training.loop import pretrain

logging.basicConfig(filename=snakemake.log[0], level=logging.INFO, format="%(asctime)s %(message)s")
torch.set_num_threads(snakemake.threads)
subjects = np.load(snakemake.params.subjects).astype(str)
output_dir = snakemake.output.encoder.rsplit("/", 1)[0]
pretrain(snakemake.params.settings, snakemake.input.shards, subjects, output_dir, log=logging.info)
