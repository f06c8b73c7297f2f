"""Brainmarks interoperability: our encoders as its models, our probe set as its dataset, its models in our probes.

Brainmarks (MedARC's fMRI foundation-model evaluation suite, ``pip install --no-deps brainmarks``)
finds models and datasets as modules of the namespace packages ``brainmarks.models`` and
``brainmarks.datasets``. brainscale ships one of each (``src/brainmarks/*/brainscale.py``); their
logic lives here:

- :mod:`.model`: any ``encoder.pt`` as a Brainmarks model (transform and wrapper);
- :mod:`.export`: the probe set as Brainmarks Arrow datasets with target maps;
- :mod:`.features`: a Brainmarks model's features of our probe set, for our probes.

A Brainmarks space is a channel layout; we write two of them from the shards' 457 channels
(Schaefer-400, Tian S3, Buckner 7, in that order): ``schaefer400_tians3_buckner7`` (all of them)
and ``schaefer400`` (the 400 cortical ones). ``schaefer400_tians3`` (450) is the first 450.
"""

from __future__ import annotations

import numpy as np

from ..errors import BrainscaleError

__all__ = ["BrainmarksError", "SPACES", "EXPORTED_SPACES", "space_channels", "run_bold", "brainmarks_version",
           "require_brainmarks", "SUPPORTED_VERSION"]

SUPPORTED_VERSION = "0.1.1"
INSTALL_HINT = (f'pip install -e ".[brainmarks]" && pip install --no-deps brainmarks=={SUPPORTED_VERSION} '
                "(README, \"Brainmarks\")")

#: Brainmarks space -> number of leading channels of the shards' 457 it takes.
SPACES = {"schaefer400_tians3_buckner7": 457, "schaefer400_tians3": 450, "schaefer400": 400}
#: The spaces ``brainmarks_export`` writes.
EXPORTED_SPACES = ("schaefer400_tians3_buckner7", "schaefer400")


class BrainmarksError(BrainscaleError, ValueError):
    """Brainmarks and brainscale cannot meet as asked (the message names the fix)."""


def space_channels(space: str, n_channels: int = 457) -> np.ndarray:
    """Indices of the shards' channels that make up a Brainmarks ``space``."""
    if space not in SPACES:
        raise BrainmarksError(
            f"Brainmarks space '{space}' has no channels brainscale writes: the shards hold Schaefer-400 + Tian S3 + "
            f"Buckner 7 volumes, which give {', '.join(SPACES)}. Use a Brainmarks model of one of these spaces "
            "(e.g. connectome_schaefer400, brain_semantoks), or preprocess into that space outside brainscale.")
    if n_channels != 457:
        raise BrainmarksError(f"the shards hold {n_channels} channels, not 457 (Schaefer-400, Tian S3, Buckner 7): "
                              "Brainmarks spaces need those three atlases. Rebuild the shards with them.")
    return np.arange(SPACES[space])


def run_bold(timeseries: np.ndarray, channels: np.ndarray, frames: int | None = None) -> np.ndarray:
    """A shard run (channels, T) as Brainmarks' ``bold``: (T or ``frames``, channels of the space) float32,
    the zeros of a channel the run lacks in place of NaN."""
    return np.nan_to_num(timeseries[channels, :frames].T.astype(np.float32))


def brainmarks_version(module) -> str:
    """The version of an imported ``brainmarks`` package ("unknown" where it does not say)."""
    return getattr(getattr(module, "version", None), "__version__", "unknown")


def require_brainmarks():
    """Import Brainmarks and check that it has the plugin API we use; returns the ``brainmarks`` module."""
    try:
        import brainmarks
        from brainmarks.datasets import base as dataset_base, registry as dataset_registry
        from brainmarks.models import base as model_base, registry as model_registry
    except ImportError as error:
        raise BrainmarksError(f"Brainmarks cannot be imported ({error}). Install it: {INSTALL_HINT}.") from None
    needed = {model_registry: ("register_model", "create_model", "list_models"), model_base: ("Embeddings",),
              dataset_registry: ("register_dataset", "create_dataset", "list_datasets"),
              dataset_base: ("HFDataset", "load_arrow_dataset")}
    missing = [f"{module.__name__}.{name}" for module, names in needed.items() for name in names
               if not hasattr(module, name)]
    if missing:
        raise BrainmarksError(f"Brainmarks {brainmarks_version(brainmarks)} lacks the plugin API brainscale uses "
                              f"({', '.join(missing)}). "
                              f"Install the version it was built against: pip install --no-deps "
                              f"brainmarks=={SUPPORTED_VERSION}.")
    return brainmarks
