"""Snakemake adapter: gather the batches' QC tables into one table and figure (rule qc_report).

Any number of exclusions, none and all included, gives a table and a figure; when every run is
excluded the log says why, and rule build_shards stops with the same message.
"""

import logging
from pathlib import Path

import pandas as pd

from brainscale.io import write_text_atomic
from brainscale.plotting.qc import plot_run_qc
from brainscale.preprocessing.pipeline import (AllRunsExcludedError, exclusion_counts, included_mask,
                                               require_included_runs)
from brainscale.rulelog import rule_log

rule_log(snakemake.log[0])  # messages, and an error's traceback, go to the rule's log
tables = [pd.read_csv(Path(folder) / "qc.tsv", sep="\t", na_values=["n/a"]) for folder in snakemake.input]
table = pd.concat(tables, ignore_index=True).sort_values("run_id")
write_text_atomic(snakemake.output.table, table.to_csv(sep="\t", index=False, na_rep="n/a", float_format="%.6g"))
plot_run_qc(table, snakemake.params.thresholds, snakemake.output.figure)
counts = exclusion_counts(table)
logging.info("%d runs, %d included; exclusions: %s", len(table), int(included_mask(table).sum()),
             ", ".join(f"{code} {count}" for code, count in counts.items()) or "none")
try:
    require_included_runs(table, where=snakemake.output.table)
except AllRunsExcludedError as error:
    logging.error("%s", error)
