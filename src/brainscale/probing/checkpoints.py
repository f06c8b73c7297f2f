"""Encoders to probe: this project's exports, reference-format checkpoints, random initialisations.

Whatever its origin, an encoder is checked against the shards it will read: its network map
(channel -> network) must be the shards' map, else its tokenizers would read the wrong channels.
"""

from __future__ import annotations

from pathlib import Path

from ..errors import BrainscaleError, ConfigError, ExportError
from ..export import load_encoder, save_encoder
from ..objectives import RunSpec, get_objective
from ..objectives.base import PretrainingData
from ..objectives.semantoks.model import SemantoksEncoder
from ..objectives.semantoks.reference import (ReferenceImportError, import_reference_state_dict,
                                               load_reference_checkpoint)
from ..objectives.semantoks.spec import MODEL_SIZES, model_config

__all__ = ["CheckpointError", "load_checkpoint", "random_encoder", "write_random_encoder"]

FORMATS = ("brainscale", "reference")


class CheckpointError(BrainscaleError, ValueError):
    """A checkpoint cannot be probed on these shards (the message names the file and the fix)."""


def load_checkpoint(path: str | Path, network_map: list[int], *, format: str = "brainscale",
                    settings: dict | None = None, name: str | None = None) -> SemantoksEncoder:
    """Load the encoder of a checkpoint in eval mode, checked against the shards' network map.

    Parameters
    ----------
    path : str or Path
        An ``encoder.pt`` export of this project, or a reference training checkpoint / ``.pth``.
    network_map : list of int
        The shards' channel -> network map (:func:`brainscale.objectives.base.network_map_of`).
    format : {"brainscale", "reference"}
    settings : dict, optional
        For ``reference``: ``model`` (base, small, tiny) and ``architecture`` overrides, the
        architecture the checkpoint was trained with (a reference checkpoint stores no usable config).
    name : str, optional
        How the user refers to the checkpoint in messages (e.g. its config key).
    """
    label = f"checkpoint '{name}' ({path})" if name else f"checkpoint {path}"
    if format not in FORMATS:
        raise CheckpointError(f"{label}: format '{format}' is not one of {FORMATS}.")
    if not Path(path).is_file():
        raise CheckpointError(f"{label}: no such file. Fix the path in the config or train the model first.")
    if format == "brainscale":
        try:
            encoder = load_encoder(path)
        except ExportError as error:
            raise CheckpointError(f"{label}: {error}") from None
        if list(encoder.config.network_map) != list(network_map):
            raise CheckpointError(
                f"{label}: trained on {len(encoder.config.network_map)} channels with another channel -> network "
                f"map than the shards' ({len(network_map)} channels). Probe it on shards built with the same "
                "atlases (Schaefer-400 7-network order, Tian S3, Buckner 7).")
        return encoder
    settings = settings or {}
    try:
        size = settings.get("model", "base")
        if size not in MODEL_SIZES:
            raise CheckpointError(f"{label}: model '{size}' is not one of {sorted(MODEL_SIZES)}: set the size the "
                                  "checkpoint was trained with.")
        overrides = {k: v for k, v in (settings.get("architecture") or {}).items() if v is not None}
        encoder = SemantoksEncoder(model_config({**MODEL_SIZES[size], **overrides}, network_map))
        import_reference_state_dict(load_reference_checkpoint(path), encoder)
    except (ReferenceImportError, ConfigError) as error:
        raise CheckpointError(f"{label}: {error} Set its model (and architecture) in the config to the size it "
                              "was trained with.") from None
    return encoder.eval()


def random_encoder(run: RunSpec, data: PretrainingData, seed: int):
    """The exported encoder of ``run`` with the initial weights of ``seed``; ``data`` is what the
    objective may read (the largest pretraining subset, for an objective whose encoder depends on its data)."""
    return get_objective(run.objective)(run, data).random_encoder(seed)


def write_random_encoder(run: RunSpec, data: PretrainingData, seed: int, path: str | Path) -> None:
    """Export a randomly initialised encoder (the random-init baseline) like a trained one."""
    save_encoder(random_encoder(run, data, seed), path, objective=run.objective, run=run.to_dict(), trained_steps=0,
                 pretraining_subjects=0, initialisation_seed=seed)
