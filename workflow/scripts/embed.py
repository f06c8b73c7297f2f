"""Snakemake adapter: frozen-encoder features of the probe subjects (rule embed)."""

import logging

import torch

from brainscale.probing.embeddings import embed_checkpoint
from brainscale.rulelog import rule_log

rule_log(snakemake.log[0])  # messages, and an error's traceback, go to the rule's log
torch.set_num_threads(snakemake.threads)
hit = embed_checkpoint(snakemake.input.checkpoint, snakemake.input.shards, snakemake.input.splits,
                       snakemake.output[0], snakemake.params.settings, checkpoint=snakemake.params.checkpoint,
                       name=snakemake.wildcards.source, log=logging.info)
logging.info("cache %s", "hit: nothing recomputed" if hit else "miss: features computed")
