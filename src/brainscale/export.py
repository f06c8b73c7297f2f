"""The ``encoder.pt`` export: an encoder's objective, architecture and weights, and where it came from.

Probing, embedding and the random-init baseline read and write exports through this module only;
it needs torch and the objective's model, not the training stack. An export records the package
version and, where the code runs from a git checkout, its commit.
"""

from __future__ import annotations

import subprocess
from functools import lru_cache
from pathlib import Path

import torch

from . import __version__
from .errors import ConfigError, ExportError
from .io import atomic_file, load_torch_file
from .objectives import get_objective

__all__ = ["EXPORT_FORMAT", "LEGACY_FORMATS", "save_encoder", "load_encoder", "provenance"]

EXPORT_FORMAT = "brainscale-encoder-2"
#: Exports written before objectives were plug-ins: Brain-Semantoks encoders.
LEGACY_FORMATS = {"brainscale-semantoks-encoder-1": "semantoks"}


@lru_cache(maxsize=1)
def provenance() -> dict:
    """``{"version", "commit", "dirty"}``: the commit of the brainscale checkout the package runs from
    and whether it had uncommitted changes; commit None where the package is not a checkout's (an
    installed wheel, even inside another project's repository)."""
    source = Path(__file__).resolve().parent
    found = {"version": __version__, "commit": None, "dirty": None}
    top = _git(source, "rev-parse", "--show-toplevel")
    if top is None or Path(top).resolve() != source.parents[1]:  # the repository must be brainscale's (src/brainscale)
        return found
    found["commit"] = _git(source, "rev-parse", "HEAD")
    status = _git(source, "status", "--porcelain", "--untracked-files=no")
    found["dirty"] = None if status is None else bool(status)
    return found


def _git(folder: Path, *arguments: str) -> str | None:
    """The output of a git command in ``folder``, None where git is absent or fails."""
    try:
        result = subprocess.run(["git", *arguments], cwd=folder, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return result.stdout.strip() if result.returncode == 0 else None


def save_encoder(encoder, path: str | Path, *, objective: str, **metadata) -> None:
    """Write an encoder export: its objective, weights and config, the provenance and ``metadata``,
    atomically; :func:`load_encoder` reads it."""
    payload = {"format": EXPORT_FORMAT, "objective": objective, "config": encoder.config.to_dict(),
               "state_dict": {k: v.detach().cpu() for k, v in encoder.state_dict().items()},
               "brainscale": provenance(), **metadata}
    with atomic_file(Path(path)) as temporary:
        torch.save(payload, temporary)


def load_encoder(path: str | Path):
    """Load an exported encoder in eval mode.

    Raises
    ------
    ExportError
        If the file is not an export, or its weights do not fit the architecture its config names.
    """
    payload = load_torch_file(path, ExportError)
    export_format = payload.get("format") if isinstance(payload, dict) else None
    if export_format != EXPORT_FORMAT and export_format not in LEGACY_FORMATS:
        raise ExportError(f"{path}: not a brainscale encoder export ({EXPORT_FORMAT}). A reference "
                          "Brain-Semantoks checkpoint is read with format: reference (see config/README.md).")
    try:
        objective = get_objective(payload.get("objective") or LEGACY_FORMATS[export_format])
    except ConfigError as error:
        raise ExportError(f"{path}: {error} Install the package that provides it, or probe another export.") from None
    try:
        encoder = objective.encoder_from_config(payload["config"])
        encoder.load_state_dict(payload["state_dict"], strict=True)
    except (RuntimeError, TypeError, ValueError) as error:
        first = str(error).strip().splitlines()[:3]
        raise ExportError(f"{path}: the weights do not match the architecture in the checkpoint's config "
                          f"({' '.join(first)}). The file was edited or written by another version: "
                          "export it again from its training run.") from None
    return encoder.eval()
