"""BIDS file names: parse them into entities and build them back.

Only the entities fMRIPrep writes for functional derivatives are known here, in
the order the BIDS specification fixes for them.
"""

from __future__ import annotations

import re
from pathlib import Path

__all__ = ["ENTITY_ORDER", "parse_bids_name", "build_bids_name"]

#: Entities in the order BIDS requires them in a file name.
ENTITY_ORDER = ("sub", "ses", "task", "acq", "ce", "rec", "dir", "run", "echo",
                "hemi", "space", "res", "den", "atlas", "seg", "stat", "desc")

_LABEL = re.compile(r"^[A-Za-z0-9]+$")
_INDEX_ENTITIES = {"run", "echo"}


def parse_bids_name(path: str | Path) -> dict:
    """Split a BIDS file name into entities, suffix and extension.

    Parameters
    ----------
    path : str or Path
        A file name or path, e.g. ``sub-01_task-rest_desc-preproc_bold.nii.gz``.

    Returns
    -------
    dict
        ``{"entities": {...}, "suffix": str, "extension": str}``, entities in file order.

    Raises
    ------
    ValueError
        If the name is not ``key-value`` pairs followed by a suffix, uses an unknown
        entity, repeats one, has a non-alphanumeric label, or breaks the BIDS order.
    """
    name = Path(path).name
    stem, dot, extension = name.partition(".")
    parts = stem.split("_")
    if len(parts) < 2 or "-" in parts[-1]:
        raise ValueError(f"{name}: a BIDS name is key-value pairs then a suffix, e.g. sub-01_bold.nii.gz")
    entities: dict[str, str] = {}
    for part in parts[:-1]:
        key, sep, value = part.partition("-")
        if not sep or key not in ENTITY_ORDER:
            raise ValueError(f"{name}: '{part}' is not a known BIDS entity (known: {', '.join(ENTITY_ORDER)})")
        if key in entities:
            raise ValueError(f"{name}: entity '{key}' appears twice")
        if not _LABEL.match(value) or (key in _INDEX_ENTITIES and not value.isdigit()):
            raise ValueError(f"{name}: value '{value}' of entity '{key}' is not a valid BIDS label")
        entities[key] = value
    positions = [ENTITY_ORDER.index(key) for key in entities]
    if positions != sorted(positions):
        raise ValueError(f"{name}: entities are out of BIDS order (expected {', '.join(ENTITY_ORDER)})")
    if "sub" not in entities:
        raise ValueError(f"{name}: the 'sub' entity is required")
    return {"entities": entities, "suffix": parts[-1], "extension": dot + extension}


def build_bids_name(entities: dict, suffix: str, extension: str) -> str:
    """Build a BIDS file name from entities (any order; ``None`` values are skipped)."""
    unknown = set(entities) - set(ENTITY_ORDER)
    if unknown:
        raise ValueError(f"unknown BIDS entities {sorted(unknown)}")
    pairs = [f"{key}-{entities[key]}" for key in ENTITY_ORDER if entities.get(key) is not None]
    return "_".join(pairs + [suffix]) + extension
