"""Snakemake adapter: gather the batches' QC tables into one table and figure (rule qc_report)."""

import logging
from pathlib import Path

import pandas as pd

from brainscale.io import write_text_atomic
from brainscale.plotting.qc import plot_run_qc

logging.basicConfig(filename=snakemake.log[0], level=logging.INFO, format="%(asctime)s %(message)s")
tables = [pd.read_csv(Path(folder) / "qc.tsv", sep="\t", na_values=["n/a"]) for folder in snakemake.input]
table = pd.concat(tables, ignore_index=True).sort_values("run_id")
write_text_atomic(snakemake.output.table, table.to_csv(sep="\t", index=False, na_rep="n/a", float_format="%.6g"))
plot_run_qc(table, snakemake.params.thresholds, snakemake.output.figure)
logging.info("%d runs, %d included", len(table), int(table["included"].sum()))
