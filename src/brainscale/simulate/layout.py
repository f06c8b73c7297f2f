"""Where a simulation writes its files: names only, no numerical libraries.

Snakemake's parse needs the demo atlases' paths before any job runs; importing the simulator for them
(scikit-learn, nibabel, scipy) cost every ``snakemake`` invocation about a second.
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["SPACE", "ATLAS_ENTITIES", "resolution_label", "demo_atlas_paths"]

SPACE = "MNI152NLin2009cAsym"
#: kind -> (BIDS ``atlas``, ``desc``) of the simulated atlases
ATLAS_ENTITIES = {"cortical": ("Schaefer2018", "400Parcels7Networks"), "subcortical": ("Tian", "S3"),
                  "cerebellar": ("Buckner2011", "7Networks")}


def resolution_label(resolution_mm: float) -> str:
    """The ``res-`` entity of a resolution: ``5`` for 5 mm, ``2p5`` for 2.5 mm."""
    return f"{resolution_mm:g}".replace(".", "p")


def demo_atlas_paths(output_dir: str | Path, resolution_mm: float) -> dict:
    """``{kind: {"image": path, "labels": path}}`` of the atlases a simulation writes."""
    res = resolution_label(resolution_mm)
    paths = {}
    for kind, (atlas, desc) in ATLAS_ENTITIES.items():
        stem = Path(output_dir) / "atlases" / f"tpl-{SPACE}_res-{res}_atlas-{atlas}_desc-{desc}_dseg"
        paths[kind] = {"image": f"{stem}.nii.gz", "labels": f"{stem}.tsv"}
    return paths
