"""The three atlases: label tables, the Schaefer 7-network channel order, and the
voxel-to-channel weights used to parcellate a BOLD grid.

Channels are the cortical parcels in Schaefer 7-network order (left hemisphere
then right, networks Vis, SomMot, DorsAttn, SalVentAttn, Limbic, Cont, Default
within each), then the subcortical parcels, then the cerebellar parcels, each in
the order of its label table.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
from scipy import sparse

from .discovery import InputError

__all__ = ["NETWORKS_7", "SCHAEFER400_7N_SIZES", "NETWORKS_17_TO_7", "AtlasSet", "load_atlas_set",
           "read_surface_labels", "network_mapping", "parcellation_weights"]

NETWORKS_7 = ("Vis", "SomMot", "DorsAttn", "SalVentAttn", "Limbic", "Cont", "Default")
#: Parcels per 7-network in Schaefer-400, the reference's network sizes.
SCHAEFER400_7N_SIZES = (61, 77, 46, 47, 26, 52, 91)
#: The 7-network each Schaefer 17-network belongs to (Yeo 2011 nesting).
NETWORKS_17_TO_7 = {
    "VisCent": "Vis", "VisPeri": "Vis", "SomMotA": "SomMot", "SomMotB": "SomMot",
    "DorsAttnA": "DorsAttn", "DorsAttnB": "DorsAttn", "SalVentAttnA": "SalVentAttn",
    "SalVentAttnB": "SalVentAttn", "LimbicA": "Limbic", "LimbicB": "Limbic", "ContA": "Cont",
    "ContB": "Cont", "ContC": "Cont", "DefaultA": "Default", "DefaultB": "Default",
    "DefaultC": "Default", "TempPar": "Default",
}
NETWORKS_17 = tuple(NETWORKS_17_TO_7)
_SCHAEFER = re.compile(r"^(7|17)Networks_(LH|RH)_([A-Za-z]+)(?:_.*)?$")


@dataclass
class AtlasSet:
    """The label images and the channel order of the three atlases."""

    images: dict  # kind -> nibabel image
    labels: dict  # kind -> (n,) label values in channel order
    names: dict  # kind -> list of names in channel order
    cortical_network_7: np.ndarray  # (n_cortical,) 0-6 per channel
    cortical_network_17: np.ndarray | None  # (n_cortical,) 0-16, when the atlas is in 17-network naming
    space: str | None
    surface_channels: tuple | None = None  # (left, right) per-vertex cortical channel, -1 outside parcels

    @property
    def n_channels(self) -> int:
        return sum(len(v) for v in self.labels.values())

    def channel_table(self) -> pd.DataFrame:
        """One row per channel: index, atlas kind, label value, name, network token (0-8)."""
        rows = []
        for kind, token in (("cortical", None), ("subcortical", 7), ("cerebellar", 8)):
            for position, (value, name) in enumerate(zip(self.labels[kind], self.names[kind])):
                network = int(self.cortical_network_7[position]) if token is None else token
                rows.append({"atlas": kind, "label": int(value), "name": name, "network": network})
        table = pd.DataFrame(rows)
        table.insert(0, "channel", np.arange(len(table)))
        return table


def _read_label_table(path: Path) -> pd.DataFrame:
    if not path.is_file():
        raise InputError(f"{path}: atlas label table not found. Set atlases.<kind>.labels to a TSV with "
                         "columns index and name.")
    table = pd.read_csv(path, sep="\t")
    if not {"index", "name"} <= set(table.columns):
        raise InputError(f"{path}: the label table needs columns 'index' and 'name' (found "
                         f"{', '.join(map(str, table.columns))}).")
    if table["index"].duplicated().any():
        raise InputError(f"{path}: label index repeated: {sorted(set(table['index'][table['index'].duplicated()].tolist()))}.")
    return table


def _space_of(path: Path) -> str | None:
    match = re.search(r"(?:^|_)(?:tpl|space)-([A-Za-z0-9]+)", path.name)
    return match.group(1) if match else None


def _cortical_order(names: list[str], path: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Order the cortical parcels in 7-network order; return (order, network_7, network_17)."""
    parsed = [_SCHAEFER.match(name) for name in names]
    bad = [name for name, match in zip(names, parsed) if match is None]
    if bad:
        raise InputError(f"{path}: cortical labels must carry Schaefer network names such as "
                         f"7Networks_LH_Vis_1; found {bad[:3]}. Use a Schaefer label table.")
    flavours = {match.group(1) for match in parsed}
    if len(flavours) > 1:
        raise InputError(f"{path}: labels mix 7- and 17-network names. Use one Schaefer label table.")
    hemisphere = np.array([0 if match.group(2) == "LH" else 1 for match in parsed])
    networks = [match.group(3) for match in parsed]
    if flavours == {"7"}:
        unknown = sorted(set(networks) - set(NETWORKS_7))
        network_17 = None
    else:
        unknown = sorted(set(networks) - set(NETWORKS_17))
        network_17 = np.array([NETWORKS_17.index(n) for n in networks]) if not unknown else None
        networks = [NETWORKS_17_TO_7.get(n, n) for n in networks]
    if unknown:
        raise InputError(f"{path}: unknown network names {unknown}. Use a Schaefer 7- or 17-network label table.")
    network_7 = np.array([NETWORKS_7.index(n) for n in networks])
    # Stable sort: hemisphere, then 7-network; the table order is kept within a network.
    order = np.lexsort((np.arange(len(names)), network_7, hemisphere))
    network_7 = network_7[order]
    counts = np.bincount(network_7, minlength=7)
    if len(names) == 400 and tuple(counts) != SCHAEFER400_7N_SIZES:
        raise InputError(f"{path}: network sizes {tuple(int(c) for c in counts)} differ from Schaefer-400's "
                         f"{SCHAEFER400_7N_SIZES} ({', '.join(NETWORKS_7)}). Check the label table.")
    if (counts == 0).any():
        missing = [NETWORKS_7[i] for i in np.flatnonzero(counts == 0)]
        raise InputError(f"{path}: no parcel of network(s) {missing}. Check the label table.")
    return order, network_7, None if network_17 is None else network_17[order]


def read_surface_labels(path: str | Path) -> tuple[np.ndarray, dict]:
    """Per-vertex label values and ``{value: name}`` of a FreeSurfer ``.annot`` or a ``.label.gii``."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: surface atlas not found. Set atlases.surface.left/right.")
    if path.name.endswith(".annot"):
        values, _, names = nib.freesurfer.read_annot(str(path))
        return np.asarray(values), {i: (n.decode() if isinstance(n, bytes) else str(n)) for i, n in enumerate(names)}
    if path.name.endswith(".label.gii"):
        image = nib.load(path)
        return np.asarray(image.darrays[0].data), dict(image.labeltable.get_labels_as_dict())
    raise InputError(f"{path}: a surface atlas must be a FreeSurfer .annot or a GIFTI .label.gii file.")


def _surface_cortex(surface: dict):
    """Cortical names in 7-network order and each hemisphere's vertex -> channel map."""
    hemispheres = []
    names: list[str] = []
    for side in ("left", "right"):
        values, table = read_surface_labels(surface[side])
        schaefer = {value: name for value, name in table.items() if _SCHAEFER.match(name)}
        if not schaefer:
            raise InputError(f"{surface[side]}: no Schaefer parcel names (e.g. 7Networks_LH_Vis_1) in the label table.")
        hemispheres.append((values, schaefer))
        names.extend(schaefer.values())
    order, network_7, network_17 = _cortical_order(names, Path(surface["left"]))
    ordered = [names[i] for i in order]
    channel_of_name = {name: channel for channel, name in enumerate(ordered)}
    maps = []
    for values, schaefer in hemispheres:
        lookup = np.full(int(max(values.max(), max(schaefer))) + 2, -1, dtype=np.int64)
        for value, name in schaefer.items():
            lookup[value] = channel_of_name[name]
        maps.append(np.where(values >= 0, lookup[np.clip(values, 0, None)], -1))
    return ordered, network_7, network_17, tuple(maps)


def load_atlas_set(specs: dict, surface: dict | None = None) -> AtlasSet:
    """Load and check the cortical, subcortical and cerebellar atlases.

    Parameters
    ----------
    specs : dict
        ``{kind: {"image": path, "labels": path}}`` for kinds cortical, subcortical, cerebellar.
    surface : dict, optional
        ``{"left": path, "right": path}`` surface atlases (``.annot`` or ``.label.gii``) with
        Schaefer names; when given, they define the cortical channels instead of the volume.

    Raises
    ------
    InputError
        An image or table missing, a label in the image absent from its table, atlases in
        different spaces, or cortical names that are not Schaefer's.
    """
    images, labels, names, spaces = {}, {}, {}, {}
    network_7 = network_17 = None
    for kind in ("cortical", "subcortical", "cerebellar"):
        if kind == "cortical" and surface is not None:
            continue
        image_path, table_path = Path(specs[kind]["image"]), Path(specs[kind]["labels"])
        if not image_path.is_file():
            raise InputError(f"{image_path}: atlas image not found. Set atlases.{kind}.image.")
        image = nib.load(image_path)
        table = _read_label_table(table_path)
        present = np.unique(np.asarray(image.dataobj)).astype(int)
        present = present[present != 0]
        missing = sorted(int(v) for v in set(present) - set(table["index"]))
        if missing:
            raise InputError(f"{image_path}: label values {missing[:10]} are in the image but not in "
                             f"{table_path.name}. Use the label table that belongs to this image.")
        values = table["index"].to_numpy()
        kind_names = table["name"].astype(str).tolist()
        if kind == "cortical":
            order, network_7, network_17 = _cortical_order(kind_names, table_path)
            values = values[order]
            kind_names = [kind_names[i] for i in order]
        images[kind], labels[kind], names[kind] = image, values, kind_names
        spaces[kind] = _space_of(image_path)
    named = {space for space in spaces.values() if space}
    if len(named) > 1:
        raise InputError(f"atlases are in different spaces ({spaces}). Use atlases of one template space.")
    surface_channels = None
    if surface is not None:
        cortical_names, network_7, network_17, surface_channels = _surface_cortex(surface)
        names["cortical"] = cortical_names
        labels["cortical"] = np.arange(1, len(cortical_names) + 1)
    return AtlasSet(images=images, labels=labels, names=names, cortical_network_7=network_7,
                    cortical_network_17=network_17, space=next(iter(named), None), surface_channels=surface_channels)


def network_mapping(atlases: AtlasSet) -> dict:
    """The reference's ``network_mapping.npz`` content for this channel order.

    Keys: ``network_map_schaefer400_7n`` (values 0-6), ``network_map_schaefer400_17n`` when the
    atlas came with 17-network names (values 0-16, listed in 7-network order),
    ``network_map_tian3`` and ``network_map_buckner7`` (all zeros: one network each). A loader
    re-indexes the maps consecutively: 7 cortical tokens, then subcortex, then cerebellum.
    """
    mapping = {
        "network_map_schaefer400_7n": atlases.cortical_network_7.astype(np.int64),
        "network_map_tian3": np.zeros(len(atlases.labels["subcortical"]), dtype=np.int64),
        "network_map_buckner7": np.zeros(len(atlases.labels["cerebellar"]), dtype=np.int64),
    }
    if atlases.cortical_network_17 is not None:
        mapping["network_map_schaefer400_17n"] = atlases.cortical_network_17.astype(np.int64)
    return mapping


def _same_grid(image, reference) -> bool:
    return image.shape[:3] == reference.shape[:3] and np.allclose(image.affine, reference.affine, atol=1e-3)


def parcellation_weights(atlases: AtlasSet, reference, *, bold_space: str | None, brain_mask=None,
                         min_inside_fraction: float = 0.5) -> tuple[np.ndarray, sparse.csr_matrix]:
    """Voxel-to-channel averaging weights on the grid of ``reference`` (a 3-D or 4-D image).

    Returns
    -------
    voxels : (V,) int array
        Flat (Fortran-order) indices of the grid voxels any atlas labels.
    weights : (n_channels, V) sparse matrix
        Row ``c`` averages channel ``c``'s voxels; an empty channel has an all-zero row.

    Raises
    ------
    InputError
        Atlas in another space than the BOLD (by name entity, or when most labelled voxels
        fall outside the brain mask after resampling).
    """
    from nilearn.image import resample_to_img

    if atlases.space and bold_space and atlases.space != bold_space:
        raise InputError(f"atlases are in space {atlases.space} but the BOLD runs in {bold_space}. "
                         "Use atlases in the BOLD space (or set data.space).")
    grid_shape = reference.shape[:3]
    columns, rows = [], []
    channel = 0
    for kind in ("cortical", "subcortical", "cerebellar"):
        if kind not in atlases.images:  # cortex from the surface: no volumetric channels
            channel += len(atlases.labels[kind])
            continue
        image = atlases.images[kind]
        if not _same_grid(image, reference):
            image = resample_to_img(image, nib.Nifti1Image(np.zeros(grid_shape, np.int8), reference.affine),
                                    interpolation="nearest", force_resample=True, copy_header=True)
        data = np.asarray(image.dataobj).astype(np.int64).ravel(order="F")
        if brain_mask is not None:
            labelled = data > 0
            inside = np.asarray(brain_mask.dataobj).ravel(order="F")[labelled] > 0
            if labelled.any() and inside.mean() < min_inside_fraction:
                raise InputError(
                    f"{kind} atlas: only {inside.mean():.0%} of its labelled voxels fall inside the BOLD brain mask "
                    "after resampling: it looks like another space. Use an atlas in the BOLD space.")
        values = atlases.labels[kind].astype(np.int64)
        lookup = np.full(max(int(data.max()), int(values.max())) + 1, -1, dtype=np.int64)
        lookup[values] = channel + np.arange(len(values))
        voxels = np.flatnonzero(data > 0)
        mapped = lookup[data[voxels]]
        keep = mapped >= 0
        columns.append(voxels[keep])
        rows.append(mapped[keep])
        channel += len(atlases.labels[kind])
    all_voxels = np.concatenate(columns)
    all_rows = np.concatenate(rows)
    voxels, position = np.unique(all_voxels, return_inverse=True)  # a voxel may sit in two atlases
    counts = np.bincount(all_rows, minlength=channel).astype(np.float64)
    values = 1.0 / counts[all_rows]
    weights = sparse.csr_matrix((values, (all_rows, position)), shape=(channel, len(voxels)))
    return voxels, weights
