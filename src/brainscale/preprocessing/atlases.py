"""The three atlases: label tables, the Schaefer 7-network channel order, the channels'
coordinates and the voxel-to-channel weights used to parcellate a BOLD grid.

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

__all__ = ["NETWORKS_7", "NETWORKS_17", "SCHAEFER400_7N_SIZES", "NETWORKS_17_TO_7", "AtlasSet", "load_atlas_set",
           "read_surface_labels", "network_mapping", "channel_coordinates", "volume_centroids", "surface_centroids",
           "parcellation_weights"]

NETWORKS_7 = ("Vis", "SomMot", "DorsAttn", "SalVentAttn", "Limbic", "Cont", "Default")
#: Parcels per 7-network in Schaefer-400, the reference's network sizes.
SCHAEFER400_7N_SIZES = (61, 77, 46, 47, 26, 52, 91)
#: The 7-network a Schaefer 17-network's name points to (Yeo 2011). Not the 7-network of its parcels:
#: the 400 parcels are the same in both atlases, but e.g. a 17Networks_LH_DorsAttnB parcel can lie
#: in the 7-network SomMot. The 7-network order of a 17-network atlas comes from matching its parcels
#: to the 7-network atlas (``atlases.cortical_7n`` / ``atlases.surface_7n``), never from these names.
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


def _parse_schaefer(names: list[str], path: Path) -> tuple[str, np.ndarray, list[str]]:
    """Flavour ("7" or "17"), hemisphere (0 LH, 1 RH) and network token of Schaefer names."""
    parsed = [_SCHAEFER.match(name) for name in names]
    bad = [name for name, match in zip(names, parsed) if match is None]
    if bad:
        raise InputError(f"{path}: cortical labels must carry Schaefer network names such as "
                         f"7Networks_LH_Vis_1; found {bad[:3]}. Use a Schaefer label table.")
    flavours = {match.group(1) for match in parsed}
    if len(flavours) > 1:
        raise InputError(f"{path}: labels mix 7- and 17-network names. Use one Schaefer label table.")
    hemisphere = np.array([0 if match.group(2) == "LH" else 1 for match in parsed])
    return flavours.pop(), hemisphere, [match.group(3) for match in parsed]


def _network_indices(flavour: str, networks: list[str], path: Path) -> np.ndarray:
    known = NETWORKS_7 if flavour == "7" else NETWORKS_17
    unknown = sorted(set(networks) - set(known))
    if unknown:
        raise InputError(f"{path}: unknown network names {unknown}. Use a Schaefer 7- or 17-network label table.")
    return np.array([known.index(n) for n in networks], dtype=np.int64)


def _seven_network_order(hemisphere: np.ndarray, network_7: np.ndarray, path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Stable sort by hemisphere, then 7-network (table order kept within a network); check the sizes."""
    order = np.lexsort((np.arange(len(network_7)), network_7, hemisphere))
    network_7 = network_7[order]
    counts = np.bincount(network_7, minlength=7)
    if len(network_7) == 400 and tuple(counts) != SCHAEFER400_7N_SIZES:
        raise InputError(f"{path}: network sizes {tuple(int(c) for c in counts)} differ from Schaefer-400's "
                         f"{SCHAEFER400_7N_SIZES} ({', '.join(NETWORKS_7)}). Check the label table.")
    if (counts == 0).any():
        missing = [NETWORKS_7[i] for i in np.flatnonzero(counts == 0)]
        raise InputError(f"{path}: no parcel of network(s) {missing}. Check the label table.")
    return order, network_7


def _cortical_order(names: list[str], path: Path, *, companion_key: str) -> tuple[np.ndarray, np.ndarray]:
    """Order 7-network-named parcels in 7-network order; return (order, network_7).

    17-network names are refused: their networks do not nest in the 7-network assignment of
    the same parcels, so the order must come from the 7-network atlas (``companion_key``).
    """
    flavour, hemisphere, networks = _parse_schaefer(names, path)
    if flavour == "17":
        raise InputError(
            f"{path}: the cortical atlas has Schaefer 17-network names (e.g. {names[0]}), and those networks do not "
            "nest in the 7-network assignment of the same parcels (a 17Networks_LH_DorsAttnB parcel can lie in the "
            "7-network SomMot), so the 7-network channel order cannot be read from the names. Set "
            f"{companion_key} to the Schaefer 7-network atlas of the same resolution: its parcels are matched to "
            "these one by one.")
    return _seven_network_order(hemisphere, _network_indices("7", networks, path), path)


def _match_parcels(ids: np.ndarray, ids_7n: np.ndarray, names: list[str], names_7n: list[str], *,
                   files: tuple, key: str, unit: str) -> np.ndarray:
    """Row of the 7-network table that each parcel coincides with (identical voxel or vertex sets).

    ``ids`` and ``ids_7n`` are per voxel (or vertex) table rows + 1, 0 outside any parcel.
    """
    n, n_7n = len(names), len(names_7n)
    inside = (ids > 0) | (ids_7n > 0)
    codes, counts = np.unique(ids[inside].astype(np.int64) * (n_7n + 1) + ids_7n[inside], return_counts=True)
    parcel, parcel_7n = np.divmod(codes, n_7n + 1)
    pairs_of = np.bincount(parcel, minlength=n + 1)
    pairs_of_7n = np.bincount(parcel_7n, minlength=n_7n + 1)
    fix = (f"Set {key} to the Schaefer 7-network atlas of the same resolution (number of parcels) and the same "
           f"{'grid' if unit == 'voxels' else 'surface'} as the 17-network one: each of its parcels must be exactly "
           "one parcel of the other.")
    where = f"{files[0]} against the 7-network atlas {files[1]} ({key})"

    def spread(mask, other_names, other_ids):
        parts = [f"{other_names[j - 1] if j else 'outside any parcel'} ({c})"
                 for j, c in zip(other_ids[mask], counts[mask])]
        return ", ".join(parts[:6]) + (", ..." if len(parts) > 6 else "")

    match = np.full(n, -1, dtype=np.int64)
    for row in range(n):
        mine = parcel == row + 1
        if not mine.any():
            raise InputError(f"{where}: parcel {names[row]} has no {unit}, so it cannot be matched by overlap. {fix}")
        partner = int(parcel_7n[mine][0])
        if pairs_of[row + 1] != 1 or partner == 0 or pairs_of_7n[partner] != 1:
            detail = f"its {int(counts[mine].sum())} {unit} fall in {spread(mine, names_7n, parcel_7n)}"
            if pairs_of[row + 1] == 1 and partner:
                theirs = parcel_7n == partner
                detail += (f"; {names_7n[partner - 1]} has {int(counts[theirs].sum())} {unit}, in "
                           f"{spread(theirs, names, parcel)}")
            raise InputError(f"{where}: 17-network parcel {names[row]} does not coincide with one 7-network parcel: "
                             f"{detail}. {fix}")
        match[row] = partner - 1
    unmatched = sorted(set(range(n_7n)) - set(match.tolist()))
    if unmatched:
        raise InputError(f"{where}: the 7-network parcel(s) {[names_7n[j] for j in unmatched[:5]]} match no parcel of "
                         f"the 17-network atlas ({n} parcels against {n_7n}). {fix}")
    return match


def _cortical_order_by_parcels(names: list[str], names_7n: list[str], match: np.ndarray, *, files: tuple,
                               key: str) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """The 7-network order of parcels matched to a 7-network atlas: (order, network_7, network_17).

    The channel order is the one the 7-network atlas alone gives; ``network_17`` (when the names
    are 17-network) lists each channel's 17-network, in that order.
    """
    flavour, hemisphere, networks = _parse_schaefer(names, Path(files[0]))
    network_17 = _network_indices("17", networks, Path(files[0])) if flavour == "17" else None
    flavour_7n, hemisphere_7n, networks_7n = _parse_schaefer(names_7n, Path(files[1]))
    if flavour_7n != "7":
        raise InputError(f"{files[1]}: {key} must be the Schaefer 7-network atlas (names such as "
                         f"7Networks_LH_Vis_1), found {names_7n[0]}.")
    order_7n, network_7 = _seven_network_order(hemisphere_7n, _network_indices("7", networks_7n, Path(files[1])),
                                               Path(files[1]))
    crossed = np.flatnonzero(hemisphere != hemisphere_7n[match])
    if len(crossed):
        raise InputError(f"{files[0]}: parcel {names[crossed[0]]} coincides with {names_7n[match[crossed[0]]]} of "
                         f"{files[1]}, in the other hemisphere. Use atlases with the same left-right convention.")
    row_of_row_7n = np.empty(len(match), dtype=np.int64)
    row_of_row_7n[match] = np.arange(len(match))
    order = row_of_row_7n[order_7n]
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


def _surface_parcels(surface: dict) -> tuple[list[np.ndarray], list[str]]:
    """Each hemisphere's per-vertex parcel (row of the names + 1, 0 outside) and the names, LH then RH."""
    hemispheres, names = [], []
    for side in ("left", "right"):
        values, table = read_surface_labels(surface[side])
        schaefer = {value: name for value, name in table.items() if _SCHAEFER.match(name)}
        if not schaefer:
            raise InputError(f"{surface[side]}: no Schaefer parcel names (e.g. 7Networks_LH_Vis_1) in the label table.")
        lookup = np.zeros(int(max(values.max(), max(schaefer))) + 2, dtype=np.int64)
        for value, name in schaefer.items():
            names.append(name)
            lookup[value] = len(names)
        hemispheres.append(np.where(values >= 0, lookup[np.clip(values, 0, None)], 0))
    return hemispheres, names


def _surface_cortex(surface: dict, surface_7n: dict | None = None):
    """Cortical names in 7-network order, the 7- and 17-networks, and each hemisphere's vertex -> channel map.

    With ``surface_7n`` (the 7-network atlas of the same parcels), the order comes from matching
    the parcels vertex by vertex; otherwise from the names, which must then be 7-network.
    """
    hemispheres, names = _surface_parcels(surface)
    if surface_7n is None:
        order, network_7 = _cortical_order(names, Path(surface["left"]), companion_key="atlases.surface_7n")
        network_17 = None
    else:
        hemispheres_7n, names_7n = _surface_parcels(surface_7n)
        files = (f"{surface['left']} + {surface['right']}", f"{surface_7n['left']} + {surface_7n['right']}")
        for side, ids, ids_7n in zip(("left", "right"), hemispheres, hemispheres_7n):
            if len(ids) != len(ids_7n):
                raise InputError(f"{surface[side]}: {len(ids)} vertices but {surface_7n[side]} has {len(ids_7n)}. Set "
                                 "atlases.surface_7n to the 7-network atlas on the same surface (e.g. fsaverage5).")
        match = _match_parcels(np.concatenate(hemispheres), np.concatenate(hemispheres_7n), names, names_7n,
                               files=files, key="atlases.surface_7n", unit="vertices")
        order, network_7, network_17 = _cortical_order_by_parcels(names, names_7n, match, files=files,
                                                                  key="atlases.surface_7n")
    channel_of_row = np.empty(len(order) + 1, dtype=np.int64)
    channel_of_row[0] = -1
    channel_of_row[order + 1] = np.arange(len(order))
    maps = tuple(channel_of_row[ids] for ids in hemispheres)
    return [names[i] for i in order], network_7, network_17, maps


def _read_volume_atlas(spec: dict, key: str):
    """A label image and its table, every value of the image listed in the table."""
    image_path, table_path = Path(spec["image"]), Path(spec["labels"])
    if not image_path.is_file():
        raise InputError(f"{image_path}: atlas image not found. Set {key}.image.")
    image = nib.load(image_path)
    table = _read_label_table(table_path)
    present = np.unique(np.asarray(image.dataobj)).astype(int)
    present = present[present != 0]
    missing = sorted(int(v) for v in set(present) - set(table["index"]))
    if missing:
        raise InputError(f"{image_path}: label values {missing[:10]} are in the image but not in "
                         f"{table_path.name}. Use the label table that belongs to this image.")
    return image, table


def _parcel_rows(image, values: np.ndarray) -> np.ndarray:
    """Per voxel: the table row + 1 of its label, 0 outside any parcel."""
    data = np.asarray(image.dataobj).astype(np.int64)
    lookup = np.zeros(max(int(data.max()), int(values.max())) + 1, dtype=np.int64)
    lookup[values] = np.arange(1, len(values) + 1)
    return lookup[np.clip(data, 0, None)].ravel()


def _volume_cortex_by_parcels(image, table: pd.DataFrame, spec: dict, spec_7n: dict):
    """Channel order of a volumetric cortical atlas matched voxel by voxel to its 7-network atlas."""
    image_7n, table_7n = _read_volume_atlas(spec_7n, "atlases.cortical_7n")
    files = (spec["image"], spec_7n["image"])
    if not _same_grid(image, image_7n):
        raise InputError(f"{spec['image']} (grid {image.shape[:3]}) and {spec_7n['image']} (grid {image_7n.shape[:3]}) "
                         "are on different grids. Set atlases.cortical_7n to the 7-network atlas of the same template "
                         "and resolution (res-) as atlases.cortical.")
    names = table["name"].astype(str).tolist()
    names_7n = table_7n["name"].astype(str).tolist()
    match = _match_parcels(_parcel_rows(image, table["index"].to_numpy()),
                           _parcel_rows(image_7n, table_7n["index"].to_numpy()), names, names_7n,
                           files=files, key="atlases.cortical_7n", unit="voxels")
    return _cortical_order_by_parcels(names, names_7n, match, files=files, key="atlases.cortical_7n")


def _given(spec: dict | None) -> bool:
    return bool(spec) and any(value for value in spec.values())


def load_atlas_set(specs: dict, surface: dict | None = None) -> AtlasSet:
    """Load and check the cortical, subcortical and cerebellar atlases.

    Parameters
    ----------
    specs : dict
        ``{kind: {"image": path, "labels": path}}`` for kinds cortical, subcortical, cerebellar;
        optionally ``cortical_7n`` (``{"image", "labels"}``) and ``surface_7n`` (``{"left", "right"}``):
        the Schaefer 7-network atlas of the same parcels, required when the cortical (or surface)
        atlas has 17-network names. Its parcels are matched to the cortical ones by their voxels
        (vertices), which gives the 7-network of each channel.
    surface : dict, optional
        ``{"left": path, "right": path}`` surface atlases (``.annot`` or ``.label.gii``) with
        Schaefer names; when given, they define the cortical channels instead of the volume.

    Raises
    ------
    InputError
        An image or table missing, a label in the image absent from its table, atlases in
        different spaces, cortical names that are not Schaefer's, 17-network names without the
        7-network atlas, or a parcel that is not exactly one parcel of the 7-network atlas.
    """
    images, labels, names, spaces = {}, {}, {}, {}
    network_7 = network_17 = None
    for kind in ("cortical", "subcortical", "cerebellar"):
        if kind == "cortical" and surface is not None:
            continue
        image, table = _read_volume_atlas(specs[kind], f"atlases.{kind}")
        values = table["index"].to_numpy()
        kind_names = table["name"].astype(str).tolist()
        if kind == "cortical":
            if _given(specs.get("cortical_7n")):
                order, network_7, network_17 = _volume_cortex_by_parcels(image, table, specs[kind],
                                                                         specs["cortical_7n"])
            else:
                order, network_7 = _cortical_order(kind_names, Path(specs[kind]["labels"]),
                                                   companion_key="atlases.cortical_7n")
            values = values[order]
            kind_names = [kind_names[i] for i in order]
        images[kind], labels[kind], names[kind] = image, values, kind_names
        spaces[kind] = _space_of(Path(specs[kind]["image"]))
    named = {space for space in spaces.values() if space}
    if len(named) > 1:
        raise InputError(f"atlases are in different spaces ({spaces}). Use atlases of one template space.")
    surface_channels = None
    if surface is not None:
        surface_7n = specs.get("surface_7n") if _given(specs.get("surface_7n")) else None
        cortical_names, network_7, network_17, surface_channels = _surface_cortex(surface, surface_7n)
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


def volume_centroids(image, values: np.ndarray) -> np.ndarray:
    """(len(values), 3) centroid of each label's voxels in world coordinates (mm, through the affine).

    A label with no voxel in the image gets NaN.
    """
    data = np.asarray(image.dataobj).astype(np.int64).reshape(image.shape[:3])
    values = np.asarray(values, dtype=np.int64)
    lookup = np.full(max(int(data.max()), int(values.max())) + 1, -1, dtype=np.int64)
    lookup[values] = np.arange(len(values))
    voxels = np.argwhere(data > 0)  # (V, 3) voxel indices i, j, k
    rows = lookup[data[data > 0]]  # the same C order as argwhere
    keep = rows >= 0
    voxels, rows = voxels[keep], rows[keep]
    counts = np.bincount(rows, minlength=len(values)).astype(np.float64)
    sums = np.stack([np.bincount(rows, weights=voxels[:, axis], minlength=len(values)) for axis in range(3)], axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        centroids = sums / counts[:, None]  # NaN where a label has no voxel
    return nib.affines.apply_affine(image.affine, centroids)


def surface_centroids(vertex_channels: tuple, meshes: tuple, n_channels: int) -> np.ndarray:
    """(n_channels, 3) mean coordinates of each channel's vertices over both hemispheres (NaN: none).

    ``vertex_channels`` is ``AtlasSet.surface_channels`` (per-vertex channel, -1 outside any
    parcel); ``meshes`` the (vertices, 3) coordinates of each hemisphere, in the same order.
    """
    channels = np.concatenate(vertex_channels)
    points = np.concatenate(meshes).astype(np.float64)
    inside = channels >= 0
    counts = np.bincount(channels[inside], minlength=n_channels).astype(np.float64)
    sums = np.stack([np.bincount(channels[inside], weights=points[inside, axis], minlength=n_channels)
                     for axis in range(3)], axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return sums / counts[:, None]


#: Vertices per hemisphere of fsaverage5, whose meshes nilearn ships (no download).
FSAVERAGE5_VERTICES = 10242


def _surface_meshes(surface: dict, n_vertices: tuple) -> tuple | None:
    """(left, right) pial vertex coordinates (mm) of the atlas' surface, or None when none is found.

    Looked for: a FreeSurfer subject folder around the atlas (``<subject>/label/lh.*.annot`` ->
    ``<subject>/surf/lh.pial``), then nilearn's bundled fsaverage5 when the atlas has its
    10242 vertices per hemisphere. A mesh is used only when its vertex count matches the atlas'.
    """
    meshes = []
    for side, count in zip(("left", "right"), n_vertices):
        pial = Path(surface[side]).parent.parent / "surf" / f"{'lh' if side == 'left' else 'rh'}.pial"
        points = nib.freesurfer.read_geometry(str(pial))[0] if pial.is_file() else None
        if (points is None or len(points) != count) and count == FSAVERAGE5_VERTICES:
            from nilearn.datasets import fetch_surf_fsaverage

            points = nib.load(fetch_surf_fsaverage("fsaverage5")[f"pial_{side}"]).darrays[0].data
        if points is None or len(points) != count:
            return None
        meshes.append(np.asarray(points))
    return tuple(meshes)


def _surface_cortex_coordinates(atlases: AtlasSet, specs: dict, surface: dict) -> np.ndarray:
    """(n_cortical, 3) coordinates of surface channels: the volumetric centroid of the parcel of the
    same name where ``specs["cortical"]`` gives a volumetric atlas, else the mean of its vertices
    on the pial mesh (see :func:`_surface_meshes`), else NaN."""
    names = atlases.names["cortical"]
    coordinates = np.full((len(names), 3), np.nan)
    volume = specs.get("cortical") or {}
    if volume.get("image") and volume.get("labels"):
        image, table = _read_volume_atlas(volume, "atlases.cortical")
        row_of = {str(name): row for row, name in enumerate(table["name"])}
        centroids = volume_centroids(image, table["index"].to_numpy())
        for channel, name in enumerate(names):
            if name in row_of:
                coordinates[channel] = centroids[row_of[name]]
    unplaced = np.isnan(coordinates).any(axis=1)
    if unplaced.any():
        meshes = _surface_meshes(surface, tuple(len(v) for v in atlases.surface_channels))
        if meshes is not None:
            on_mesh = surface_centroids(atlases.surface_channels, meshes, len(names))
            coordinates[unplaced] = on_mesh[unplaced]
    return coordinates


def channel_coordinates(atlases: AtlasSet, specs: dict, surface: dict | None = None) -> np.ndarray:
    """(n_channels, 3) position of each channel in mm, in the atlases' space and the channel order.

    - Volumetric parcels (cortex, subcortex, cerebellum): the centroid of the parcel's voxels
      in world coordinates (:func:`volume_centroids`).
    - Surface parcels (``surface`` given): the volumetric centroid of the parcel of the same
      name where ``specs["cortical"]`` also gives the volumetric atlas (the subcortex's space);
      otherwise the mean of the parcel's vertices on the pial mesh of the surface (a FreeSurfer
      subject folder's ``surf/?h.pial`` beside the atlas' ``label/``, or nilearn's fsaverage5),
      which on fsaverage lies in MNI305 millimetres, within a few mm of MNI152. The sphere's
      coordinates are not used: both hemispheres' spheres are centred on the origin, so
      homologous parcels of the two hemispheres would get nearly the same position.
    - Fallback: NaN rows for a parcel without voxels, or a surface parcel with neither a
      volumetric twin nor a mesh; objectives that need positions (the MAE) refuse them and
      name the fix.
    """
    if surface is not None and "cortical" not in atlases.images:
        cortex = _surface_cortex_coordinates(atlases, specs, surface)
    else:
        cortex = volume_centroids(atlases.images["cortical"], atlases.labels["cortical"])
    parts = [cortex] + [volume_centroids(atlases.images[kind], atlases.labels[kind])
                        for kind in ("subcortical", "cerebellar")]
    return np.concatenate(parts).astype(np.float32)


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
