"""brainscale: from fMRIPrep derivatives to scaling curves of fMRI foundation models."""

__version__ = "0.1.0"
