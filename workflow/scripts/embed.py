"""Snakemake adapter: frozen-encoder features of the probe subjects (rule embed)."""

import logging

import torch

from brainscale.probing.embeddings import embed_checkpoint

logging.basicConfig(filename=snakemake.log[0], level=logging.INFO, format="%(asctime)s %(message)s")
torch.set_num_threads(snakemake.threads)
try:
    hit = embed_checkpoint(snakemake.input.checkpoint, snakemake.input.shards, snakemake.input.splits,
                           snakemake.output[0], snakemake.params.settings, checkpoint=snakemake.params.checkpoint,
                           name=snakemake.wildcards.source, log=logging.info)
except Exception as error:  # the rule's log names the problem, not only the job's stderr
    logging.error("%s", error)
    raise
logging.info("cache %s", "hit: nothing recomputed" if hit else "miss: features computed")
