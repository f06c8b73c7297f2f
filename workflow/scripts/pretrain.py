"""Snakemake adapter: pretrain one model on one subset (rule pretrain).

With ``pretrain.gpus_per_job`` > 1 the job runs ``torchrun`` with one process per GPU (data
parallel, the coding rate over the global batch); otherwise it trains in this process.
"""

import logging
import subprocess
import sys
from pathlib import Path

import numpy as np
import torch
import yaml

from brainscale.training.loop import pretrain

logging.basicConfig(filename=snakemake.log[0], level=logging.INFO, format="%(asctime)s %(message)s")
torch.set_num_threads(snakemake.threads)
output_dir = Path(snakemake.output.encoder).parent
processes = snakemake.params.processes
if processes > 1:
    output_dir.mkdir(parents=True, exist_ok=True)
    settings_file = output_dir / "settings.yaml"
    settings_file.write_text(yaml.safe_dump({"pretrain": snakemake.params.settings}))
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(processes),
               "-m", "brainscale.cli", "pretrain", "--config", str(settings_file), "--shards", snakemake.input.shards,
               "--subjects", snakemake.params.subjects, "--output", str(output_dir)]
    logging.info("running %s", " ".join(command))
    with open(snakemake.log[0], "a") as log:
        subprocess.run(command, check=True, stdout=log, stderr=subprocess.STDOUT)
else:
    subjects = np.load(snakemake.params.subjects).astype(str)
    pretrain(snakemake.params.settings, snakemake.input.shards, subjects, output_dir, log=logging.info)
