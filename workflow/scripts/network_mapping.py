"""Snakemake adapter: network_mapping.npz and the channel table (rule network_mapping)."""

import logging

from brainscale.preprocessing.batch import write_network_mapping

logging.basicConfig(filename=snakemake.log[0], level=logging.INFO, format="%(asctime)s %(message)s")
write_network_mapping(snakemake.params.atlases, snakemake.output.mapping, snakemake.output.channels,
                      surface=snakemake.params.surface)
logging.info("wrote %s", snakemake.output.mapping)
