"""BIDS file names: parse them into entities and build them back.

Only the entities fMRIPrep writes for functional derivatives are known here, in
the order the BIDS specification fixes for them. ``parse_fmriprep_name`` also reads
the one layout of fMRIPrep 20.2 LTS (and older) that breaks BIDS: surface series
``..._space-fsaverage5_hemi-L.func.gii``, ``hemi`` after ``space`` and no suffix.
"""

from __future__ import annotations

import re
from pathlib import Path

__all__ = ["ENTITY_ORDER", "RUN_ENTITIES", "parse_bids_name", "parse_fmriprep_name", "build_bids_name",
           "run_id_of"]

#: Entities in the order BIDS requires them in a file name.
ENTITY_ORDER = ("sub", "ses", "task", "acq", "ce", "rec", "dir", "run", "echo", "part",
                "hemi", "space", "res", "den", "atlas", "seg", "stat", "desc")
#: The entities that tell one acquisition from another (those before ``hemi``): a run's identity.
RUN_ENTITIES = ENTITY_ORDER[: ENTITY_ORDER.index("hemi")]

_LABEL = re.compile(r"^[A-Za-z0-9]+$")
_INDEX_ENTITIES = {"run", "echo"}
# fMRIPrep <= 20.2 surface series: <entities>_space-<s>[_den-<d>]_hemi-<L|R>[_bold].func.gii
_LEGACY_SURFACE = re.compile(r"^(?P<stem>.+)_hemi-(?P<hemi>[LR])(?:_(?P<suffix>bold))?(?P<extension>\.func\.gii)$")


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


def parse_fmriprep_name(path: str | Path) -> dict:
    """Like ``parse_bids_name``, also reading the surface names of fMRIPrep 20.2 LTS and older.

    ``sub-01_task-rest_space-fsaverage5_hemi-L.func.gii`` (and the same with ``_bold``) is read as
    ``sub-01_task-rest_hemi-L_space-fsaverage5_bold.func.gii``, the name fMRIPrep 21+ writes.

    Returns
    -------
    dict
        ``{"entities", "suffix", "extension"}`` as ``parse_bids_name`` (entities in BIDS order), and
        ``"legacy"``: True for a name in the fMRIPrep 20.2 surface layout.

    Raises
    ------
    ValueError
        If the name is neither a BIDS name nor the fMRIPrep 20.2 surface layout.
    """
    try:
        return dict(parse_bids_name(path), legacy=False)
    except ValueError as error:
        strict_error = error
    match = _LEGACY_SURFACE.match(Path(path).name)
    if match is None:
        raise strict_error
    try:
        parsed = parse_bids_name(f"{match['stem']}_bold{match['extension']}")
    except ValueError:
        raise strict_error from None
    if "hemi" in parsed["entities"]:
        raise strict_error
    entities = dict(parsed["entities"], hemi=match["hemi"])
    ordered = {key: entities[key] for key in ENTITY_ORDER if key in entities}
    return {"entities": ordered, "suffix": "bold", "extension": match["extension"], "legacy": True}


def run_id_of(entities: dict) -> str:
    """The run's identity in a file name: its entities before ``hemi``/``space`` (``sub-01_task-rest_acq-mb4_run-1``).

    Two runs that differ in ``acq``, ``ce``, ``rec``, ``dir``, ``run``, ``echo`` or ``part`` get different stems.
    """
    return "_".join(f"{key}-{entities[key]}" for key in RUN_ENTITIES if entities.get(key) is not None)


def build_bids_name(entities: dict, suffix: str, extension: str) -> str:
    """Build a BIDS file name from entities (any order; ``None`` values are skipped)."""
    unknown = set(entities) - set(ENTITY_ORDER)
    if unknown:
        raise ValueError(f"unknown BIDS entities {sorted(unknown)}")
    pairs = [f"{key}-{entities[key]}" for key in ENTITY_ORDER if entities.get(key) is not None]
    return "_".join(pairs + [suffix]) + extension
