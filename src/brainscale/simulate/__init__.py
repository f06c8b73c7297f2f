"""Synthetic fMRIPrep derivatives with known ground truth: the embedded demo input."""

__all__ = ["simulate_dataset"]


def __getattr__(name):
    # imported on first use: brainscale.simulate.layout (the file names Snakemake's parse needs) must not
    # pull in the simulator and its numerical libraries
    if name == "simulate_dataset":
        from .dataset import simulate_dataset

        return simulate_dataset
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
