"""Synthetic fMRIPrep derivatives with known ground truth: the embedded demo input."""

from .dataset import simulate_dataset

__all__ = ["simulate_dataset"]
