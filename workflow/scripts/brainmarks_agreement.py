"""Snakemake adapter: Brainmarks' main_logistic against our probes on the export's split (rule brainmarks_agreement)."""

import logging

from brainscale.brainmarks.agreement import write_agreement
from brainscale.rulelog import rule_log

rule_log(snakemake.log[0])  # messages, and an error's traceback, go to the rule's log
comparisons = [
    {"name": "connectome_schaefer400 vs baseline/connectivity", "model": "connectome_schaefer400",
     "predictions": snakemake.input.connectivity, "feature": "fc"},
] + [
    {"name": f"brainscale plugin vs {source}", "model": "brainscale", "model_kwargs": {"path": encoder},
     "predictions": predictions, "feature": "cls"}
    for source, encoder, predictions in zip(snakemake.params.sources, snakemake.input.encoders,
                                            snakemake.input.encoder_predictions)
]
write_agreement(snakemake.input.export, comparisons, snakemake.output[0], threads=snakemake.threads,
                seed=snakemake.params.seed, log=logging.info)
