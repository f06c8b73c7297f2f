"""Logging of a workflow job into its rule's ``log:`` file, errors and their tracebacks included.

Every script under ``workflow/scripts/`` starts with ``log = rule_log(snakemake.log[0])``: the
messages go to the rule's log, and an exception that ends the job is written there too (message
and traceback), as the snakemake-workflows catalog does by redirecting stderr, before Python prints
it to the job's stderr as usual. ``snakemake`` then names that log next to the failed job.
"""

from __future__ import annotations

import logging
import sys

__all__ = ["rule_log"]

FORMAT = "%(asctime)s %(message)s"


def rule_log(path: str, name: str = "brainscale"):
    """Send logging to ``path`` and record an uncaught exception there; return the info function."""
    logging.basicConfig(filename=path, level=logging.INFO, format=FORMAT, force=True)
    previous = sys.excepthook

    def log_then_raise(kind, error, traceback):
        logging.getLogger(name).error("the job failed: %s", error, exc_info=(kind, error, traceback))
        logging.shutdown()
        previous(kind, error, traceback)

    sys.excepthook = log_then_raise
    return logging.getLogger(name).info
