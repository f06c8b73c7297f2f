"""Demo atlases on a coarse MNI grid, built from the brain, grey- and white-matter
masks that nilearn ships.

Three label images share one grid: a 400-parcel cortical atlas with Schaefer
7-network names and order, a 50-parcel subcortical atlas in the style of Tian S3
and a 7-parcel cerebellar atlas in the style of Buckner 2011. The parcels are
spatially coherent clusters placed where the real networks lie, so that the
names, counts and orders downstream code sees are the real ones.

:func:`seventeen_network_atlas` gives the cortical atlas as Schaefer's 17-network
release has it: the same 400 parcels, renumbered and renamed, with the real
relationship to the 7-network assignment: the 17-network names do not nest in it
(some parcels are named after a network other than their 7-network one).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field

import numpy as np
from scipy.optimize import linear_sum_assignment
from scipy.spatial.distance import cdist
from sklearn.cluster import KMeans
from threadpoolctl import threadpool_limits

__all__ = [
    "CORTICAL_NETWORKS",
    "NETWORK_PARCELS_PER_HEMISPHERE",
    "SUBCORTICAL_STRUCTURES",
    "NETWORKS_17",
    "DemoAtlases",
    "build_demo_atlases",
    "seventeen_network_atlas",
]

#: Schaefer 7-network names, in the 7-network order.
CORTICAL_NETWORKS = ("Vis", "SomMot", "DorsAttn", "SalVentAttn", "Limbic", "Cont", "Default")

#: Parcels per network in the 400-parcel Schaefer atlas (LH, RH).
NETWORK_PARCELS_PER_HEMISPHERE = {
    "Vis": (31, 30),
    "SomMot": (37, 40),
    "DorsAttn": (23, 23),
    "SalVentAttn": (22, 25),
    "Limbic": (13, 13),
    "Cont": (22, 30),
    "Default": (52, 39),
}

# Left-hemisphere MNI anchors (x, y, z in mm) of each network's sub-regions; the right
# hemisphere mirrors x. A sub-region of None means the network's names carry none.
_NETWORK_ANCHORS = {
    "Vis": {None: [(-10, -92, 2), (-28, -84, 8), (-38, -72, -10), (-12, -72, 10)]},
    "SomMot": {None: [(-38, -22, 56), (-20, -32, 66), (-56, -10, 30), (-52, -22, 16), (-6, -20, 60)]},
    "DorsAttn": {"Post": [(-28, -56, 56), (-50, -66, 0)], "FEF": [(-28, -6, 56)], "PrCv": [(-48, 4, 32)]},
    "SalVentAttn": {"ParOper": [(-56, -34, 30)], "FrOper": [(-40, 10, 4)],
                    "PFCl": [(-34, 40, 30)], "Med": [(-6, 16, 40)]},
    "Limbic": {"OFC": [(-20, 30, -20)], "TempPole": [(-40, 12, -34)]},
    "Cont": {"Par": [(-44, -50, 46)], "PFCl": [(-44, 32, 24)], "pCun": [(-8, -66, 46)], "Cing": [(-6, 26, 36)]},
    "Default": {"Temp": [(-56, -18, -16)], "PFC": [(-6, 52, 10)], "PCC": [(-6, -54, 30)], "Par": [(-44, -66, 30)]},
}

#: The 17-networks named after each 7-network, in Schaefer's 17-network table order; a 7-network's own
#: parcels take them posterior to anterior.
NETWORKS_17 = {
    "Vis": ("VisCent", "VisPeri"), "SomMot": ("SomMotA", "SomMotB"), "DorsAttn": ("DorsAttnA", "DorsAttnB"),
    "SalVentAttn": ("SalVentAttnA", "SalVentAttnB"), "Limbic": ("LimbicA", "LimbicB"),
    "Cont": ("ContA", "ContB", "ContC"), "Default": ("DefaultA", "DefaultB", "DefaultC", "TempPar"),
}

#: Parcels whose 17-network name points to another 7-network than their own, as in the real atlases
#: (where, e.g., 17Networks_*_DorsAttnB parcels lie in the 7-network SomMot): (7-network of the parcels,
#: 17-network of their names, LH count, RH count); the parcels nearest the named network's anchors take
#: it. Collapsing the names gives the network sizes (47, 70, 52, 51, 24, 61, 95) instead of
#: (61, 77, 46, 47, 26, 52, 91), as with the real Schaefer-400 tables.
_CROSSINGS = (
    ("Vis", "DorsAttnA", 7, 7), ("SomMot", "DorsAttnB", 4, 3), ("DorsAttn", "SalVentAttnA", 3, 3),
    ("DorsAttn", "ContA", 5, 4), ("SalVentAttn", "ContB", 1, 1), ("Limbic", "TempPar", 1, 1),
    ("Cont", "DefaultB", 1, 1),
)

_NETWORK_COLOURS = {
    "Vis": "#781286", "SomMot": "#4682b4", "DorsAttn": "#00760e", "SalVentAttn": "#c43afa",
    "Limbic": "#dcf8a4", "Cont": "#e69422", "Default": "#cd3e4e",
}

#: Subcortical structures of the 50-parcel atlas: (name, parcels per hemisphere,
#: left MNI centre in mm, volume per hemisphere in cm^3), in atlas order.
SUBCORTICAL_STRUCTURES = (
    ("HIP", 4, (-26, -22, -14), 4.0),
    ("AMY", 2, (-23, -5, -20), 1.6),
    ("THA", 8, (-11, -18, 7), 7.5),
    ("NAc", 2, (-10, 12, -8), 0.7),
    ("GP", 2, (-19, -4, 0), 1.6),
    ("PUT", 4, (-25, 2, 2), 5.0),
    ("CAU", 3, (-13, 12, 10), 3.5),
)


@dataclass
class DemoAtlases:
    """The grid, the tissue classes and the three label images of the demo."""

    affine: np.ndarray
    shape: tuple
    brain_mask: np.ndarray  # (X, Y, Z) bool
    tissue: np.ndarray  # (X, Y, Z) uint8: 0 outside, 1 GM, 2 WM, 3 CSF, 4 other
    cortical: np.ndarray  # (X, Y, Z) int16 labels 1..400
    subcortical: np.ndarray  # (X, Y, Z) int16 labels 1..50
    cerebellar: np.ndarray  # (X, Y, Z) int16 labels 1..7
    cortical_names: list = field(default_factory=list)
    subcortical_names: list = field(default_factory=list)
    cerebellar_names: list = field(default_factory=list)

    TISSUE_GM, TISSUE_WM, TISSUE_CSF, TISSUE_OTHER = 1, 2, 3, 4

    def parcel_index(self) -> np.ndarray:
        """(X, Y, Z) int array: 0 outside parcels, else 1..457 in concatenated order."""
        index = np.zeros(self.shape, dtype=np.int32)
        offset = 0
        for labels, names in ((self.cortical, self.cortical_names),
                              (self.subcortical, self.subcortical_names),
                              (self.cerebellar, self.cerebellar_names)):
            inside = labels > 0
            index[inside] = labels[inside] + offset
            offset += len(names)
        return index

    def network_of_parcel(self) -> np.ndarray:
        """(457,) int: 0-6 the cortical networks, 7 subcortical, 8 cerebellum."""
        cortical = [CORTICAL_NETWORKS.index(name.split("_")[2]) for name in self.cortical_names]
        return np.array(cortical + [7] * len(self.subcortical_names) + [8] * len(self.cerebellar_names))

    def parcel_centroids(self) -> np.ndarray:
        """(457, 3) world coordinates (mm) of every parcel's centre, in concatenated order."""
        index = self.parcel_index().ravel()
        ijk = np.indices(self.shape).reshape(3, -1)
        counts = np.bincount(index, minlength=index.max() + 1)[1:]
        sums = np.stack([np.bincount(index, weights=axis, minlength=index.max() + 1)[1:] for axis in ijk], axis=1)
        voxel_centres = sums / np.maximum(counts, 1)[:, None]
        return voxel_centres @ self.affine[:3, :3].T + self.affine[:3, 3]


def _resampled_masks(resolution_mm: float):
    """Brain, GM and WM fractions of nilearn's MNI152 masks on an isotropic grid."""
    from nilearn import datasets, image

    brain = datasets.load_mni152_brain_mask(resolution=2)
    gm = datasets.load_mni152_gm_mask(resolution=2)
    wm = datasets.load_mni152_wm_mask(resolution=2)
    target = np.diag([resolution_mm] * 3 + [1.0])
    target[:3, 3] = brain.affine[:3, 3]
    fractions = []
    for mask in (brain, gm, wm):
        as_float = image.new_img_like(mask, mask.get_fdata(dtype=np.float32), copy_header=False)
        with warnings.catch_warnings():
            # Averaging binary masks into tissue fractions is the point here.
            warnings.filterwarnings("ignore", message="Resampling binary images", category=UserWarning)
            fraction = image.resample_img(as_float, target_affine=target, interpolation="continuous",
                                          force_resample=True, copy_header=True)
        fractions.append(fraction)
    affine = fractions[0].affine
    data = [np.asarray(f.get_fdata(dtype=np.float32)) for f in fractions]
    # Crop to the brain's bounding box plus one voxel, so the demo files stay small.
    inside = np.argwhere(data[0] > 0.5)
    low = np.maximum(inside.min(axis=0) - 1, 0)
    high = np.minimum(inside.max(axis=0) + 2, data[0].shape)
    crop = tuple(slice(lo, hi) for lo, hi in zip(low, high))
    affine = affine.copy()
    affine[:3, 3] = affine[:3, :3] @ low + affine[:3, 3]
    return affine, [d[crop] for d in data]


def _mirror(points, hemisphere):
    points = np.asarray(points, dtype=float)
    return points if hemisphere == "LH" else points * np.array([-1.0, 1.0, 1.0])


def _cortical_parcels(coords, hemisphere_of, rng_seed):
    """Cluster each hemisphere's cortex into 200 parcels and give them network names."""
    labels = np.zeros(len(coords), dtype=np.int16)
    names = []
    for hemi_index, hemisphere in enumerate(("LH", "RH")):
        members = np.flatnonzero(hemisphere_of == hemi_index)
        counts = {net: NETWORK_PARCELS_PER_HEMISPHERE[net][hemi_index] for net in CORTICAL_NETWORKS}
        n_parcels = sum(counts.values())
        if len(members) < n_parcels:
            raise ValueError(f"{hemisphere} cortex has {len(members)} voxels, fewer than {n_parcels} "
                             "parcels: choose a finer simulate.resolution_mm")
        kmeans = KMeans(n_clusters=n_parcels, n_init=1, random_state=rng_seed + hemi_index)
        cluster = kmeans.fit_predict(coords[members])
        centroids = kmeans.cluster_centers_
        # One slot per parcel of each network; assign clusters to slots by distance to anchors.
        slot_network = [net for net in CORTICAL_NETWORKS for _ in range(counts[net])]
        distance_to_network = {
            net: cdist(centroids, _mirror([p for pts in _NETWORK_ANCHORS[net].values() for p in pts],
                                          hemisphere)).min(axis=1)
            for net in CORTICAL_NETWORKS
        }
        cost = np.stack([distance_to_network[net] for net in slot_network], axis=1)
        cluster_rows, slots = linear_sum_assignment(cost)
        network_of_cluster = {c: slot_network[s] for c, s in zip(cluster_rows, slots)}
        for net in CORTICAL_NETWORKS:
            clusters = [c for c in range(n_parcels) if network_of_cluster[c] == net]
            subregions = list(_NETWORK_ANCHORS[net])
            anchor_sets = [_mirror(_NETWORK_ANCHORS[net][s], hemisphere) for s in subregions]
            sub_of = [int(np.argmin([cdist(centroids[[c]], a).min() for a in anchor_sets])) for c in clusters]
            # Schaefer order: by sub-region, then posterior to anterior within it.
            ordered = sorted(zip(sub_of, centroids[clusters, 1], clusters))
            numbering: dict = {}
            for sub_index, _, c in ordered:
                sub = subregions[sub_index]
                numbering[sub] = numbering.get(sub, 0) + 1
                middle = f"{net}_{sub}" if sub else net
                names.append(f"7Networks_{hemisphere}_{middle}_{numbering[sub]}")
                labels[members[cluster == c]] = len(names)
    return labels, names


def _subcortical_parcels(coords, eligible, resolution_mm, rng_seed):
    """Grow each structure from its centre, then cluster it into its parcels."""
    labels = np.zeros(len(coords), dtype=np.int16)
    taken = ~eligible.copy()
    names = []
    voxel_cm3 = resolution_mm**3 / 1000.0
    # Grow small structures first so they are never starved by big neighbours.
    grow_order = sorted(range(len(SUBCORTICAL_STRUCTURES)), key=lambda i: SUBCORTICAL_STRUCTURES[i][3])
    members_of = {}
    for hemisphere in ("RH", "LH"):
        for i in grow_order:
            name, n_parcels, centre, volume = SUBCORTICAL_STRUCTURES[i]
            n_voxels = max(n_parcels, int(round(volume / voxel_cm3)))
            distance = np.linalg.norm(coords - _mirror(centre, hemisphere), axis=1)
            distance[taken] = np.inf
            chosen = np.argsort(distance, kind="stable")[:n_voxels]
            taken[chosen] = True
            members_of[(hemisphere, i)] = chosen
    # The Tian atlases list the right hemisphere first.
    for hemisphere in ("RH", "LH"):
        for i, (name, n_parcels, _, _) in enumerate(SUBCORTICAL_STRUCTURES):
            chosen = members_of[(hemisphere, i)]
            cluster = KMeans(n_clusters=n_parcels, n_init=1, random_state=rng_seed + i).fit_predict(coords[chosen])
            order = np.argsort([coords[chosen[cluster == c], 1].mean() for c in range(n_parcels)], kind="stable")
            for rank, c in enumerate(order, start=1):
                names.append(f"{name}-{rank}-{hemisphere.lower()}")
                labels[chosen[cluster == c]] = len(names)
    return labels, names


def build_demo_atlases(resolution_mm: float = 5.0, seed: int = 21) -> DemoAtlases:
    """Build the demo grid, tissue classes and the three atlases.

    Parameters
    ----------
    resolution_mm : float, default=5.0
        Isotropic voxel size of the grid.
    seed : int, default=21
        Seed of the k-means clusterings that draw the parcels.

    Returns
    -------
    DemoAtlases
        The same for the same arguments whatever the caller's thread count: k-means assigns
        boundary voxels differently with more OpenMP/BLAS threads, so it runs on one.
    """
    with threadpool_limits(limits=1):
        return _build_demo_atlases(resolution_mm, seed)


def _build_demo_atlases(resolution_mm: float, seed: int) -> DemoAtlases:
    affine, (brain_fraction, gm_fraction, wm_fraction) = _resampled_masks(resolution_mm)
    shape = brain_fraction.shape
    brain = brain_fraction > 0.5
    ijk = np.argwhere(brain)
    coords = ijk @ affine[:3, :3].T + affine[:3, 3]
    gm = gm_fraction[brain]
    wm = wm_fraction[brain]
    cerebellum, brainstem, ventricles = _landmarks(coords)

    subcortical_labels, subcortical_names = _subcortical_parcels(
        coords, eligible=~cerebellum & ~brainstem, resolution_mm=resolution_mm, rng_seed=seed)
    in_subcortex = subcortical_labels > 0
    cortex = ~cerebellum & ~brainstem & ~in_subcortex & ~ventricles & (gm >= 0.3) & (gm >= wm)
    hemisphere_of = np.where(coords[:, 0] <= 0, 0, 1)
    cortical_labels = np.zeros(len(coords), dtype=np.int16)
    cortical_labels[cortex], cortical_names = _cortical_parcels(coords[cortex], hemisphere_of[cortex], seed)
    cerebellar_labels = np.zeros(len(coords), dtype=np.int16)
    cerebellar_labels[cerebellum], cerebellar_names = _cerebellar_parcels(coords[cerebellum], seed)

    parcel = (cortical_labels > 0) | in_subcortex | cerebellum
    tissue = _tissue_classes(parcel, brainstem, ventricles, gm, wm)
    return DemoAtlases(
        affine=affine, shape=shape, brain_mask=brain,
        tissue=_to_volume(tissue, ijk, shape, np.uint8),
        cortical=_to_volume(cortical_labels, ijk, shape, np.int16),
        subcortical=_to_volume(subcortical_labels, ijk, shape, np.int16),
        cerebellar=_to_volume(cerebellar_labels, ijk, shape, np.int16),
        cortical_names=cortical_names, subcortical_names=subcortical_names,
        cerebellar_names=cerebellar_names,
    )


def _landmarks(coords: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Cerebellum, brainstem and lateral ventricles of the brain voxels at ``coords`` (MNI mm), as masks."""
    x, y, z = coords.T
    cerebellum = (y <= -42) & (z <= -18)
    brainstem = ~cerebellum & (z <= -10) & (np.abs(x) <= 12) & (y > -42) & (y < -10)
    # The lateral ventricles (two ellipsoids) hold CSF, never cortex.
    ventricles = (((np.abs(x) - 12) / 8) ** 2 + ((y + 8) / 26) ** 2 + ((z - 16) / 10) ** 2) <= 1
    return cerebellum, brainstem, ventricles


def _cerebellar_parcels(coords: np.ndarray, rng_seed: int) -> tuple[np.ndarray, list]:
    """Cluster the cerebellum into 7 parcels, numbered 1..7 by the centres' x, then z."""
    kmeans = KMeans(n_clusters=7, n_init=1, random_state=rng_seed)
    cluster = kmeans.fit_predict(coords)
    order = np.lexsort((kmeans.cluster_centers_[:, 2], kmeans.cluster_centers_[:, 0]))
    rank_of = np.empty(7, dtype=np.int16)
    rank_of[order] = np.arange(1, 8)
    return rank_of[cluster], [f"Network{k}" for k in range(1, 8)]


def _tissue_classes(parcel, brainstem, ventricles, gm, wm) -> np.ndarray:
    """Tissue code of each brain voxel: parcels are GM; elsewhere WM or CSF from the mask fractions."""
    tissue = np.full(len(parcel), DemoAtlases.TISSUE_OTHER, dtype=np.uint8)
    tissue[parcel] = DemoAtlases.TISSUE_GM
    tissue[~parcel & ~brainstem & (wm >= 0.5)] = DemoAtlases.TISSUE_WM
    tissue[~parcel & ~brainstem & (ventricles | (gm + wm < 0.9))] = DemoAtlases.TISSUE_CSF
    return tissue


def _to_volume(values: np.ndarray, ijk: np.ndarray, shape: tuple, dtype) -> np.ndarray:
    """A (X, Y, Z) image holding ``values`` at the voxels ``ijk``, zero elsewhere."""
    volume = np.zeros(shape, dtype=dtype)
    volume[tuple(ijk.T)] = values
    return volume


def _network_of_17(name17: str) -> str:
    return next(net for net, subs in NETWORKS_17.items() if name17 in subs)


def seventeen_network_atlas(cortical: np.ndarray, names: list, affine: np.ndarray) -> tuple[np.ndarray, list]:
    """The 17-network version of a 7-network demo cortical atlas: same parcels, other numbers and names.

    Parameters
    ----------
    cortical : (X, Y, Z) int array
        7-network label image, labels 1..n (``DemoAtlases.cortical``).
    names : list of str
        Its 7-network names, label ``k`` is ``names[k - 1]``.
    affine : (4, 4) array

    Returns
    -------
    labels : (X, Y, Z) int16 array
        Each parcel of ``cortical``, numbered in the 17-network table order (LH then RH, by
        17-network, then by 7-network label).
    names : list of str
        ``17Networks_<hemi>_<network>_<k>``, label ``k`` is ``names[k - 1]``. The names do not nest in
        the 7-network assignment (see ``_CROSSINGS``).
    """
    n = len(names)
    ijk = np.argwhere(cortical > 0)
    values = cortical[tuple(ijk.T)].astype(np.int64)
    coords = ijk @ affine[:3, :3].T + affine[:3, 3]
    sizes = np.bincount(values, minlength=n + 1)[1:]
    if (sizes == 0).any():
        raise ValueError(f"parcel {names[int(np.argmin(sizes))]} has no voxel; every parcel needs one")
    centroids = np.stack([np.bincount(values, weights=coords[:, d], minlength=n + 1)[1:] for d in range(3)], 1)
    centroids /= sizes[:, None]
    hemisphere = [name.split("_")[1] for name in names]
    network = [name.split("_")[2] for name in names]
    name17 = [None] * n
    for hemi_index, hemi in enumerate(("LH", "RH")):
        for source, target, *counts in _CROSSINGS:
            free = [i for i in range(n) if hemisphere[i] == hemi and network[i] == source and name17[i] is None]
            anchors = _mirror([p for pts in _NETWORK_ANCHORS[_network_of_17(target)].values() for p in pts], hemi)
            nearest = np.argsort(cdist(centroids[free], anchors).min(axis=1), kind="stable")[:counts[hemi_index]]
            for i in nearest:
                name17[free[i]] = target
        for net in CORTICAL_NETWORKS:
            own = [i for i in range(n) if hemisphere[i] == hemi and network[i] == net and name17[i] is None]
            own.sort(key=lambda i: centroids[i, 1])  # posterior to anterior
            for chunk, sub in zip(np.array_split(np.array(own, dtype=int), len(NETWORKS_17[net])), NETWORKS_17[net]):
                for i in chunk:
                    name17[i] = sub
    order17 = [sub for subs in NETWORKS_17.values() for sub in subs]
    table_order = sorted(range(n), key=lambda i: (hemisphere[i] != "LH", order17.index(name17[i]), i))
    new_names, numbering, relabel = [], {}, np.zeros(n + 1, dtype=np.int16)
    for i in table_order:
        key = (hemisphere[i], name17[i])
        numbering[key] = numbering.get(key, 0) + 1
        new_names.append(f"17Networks_{hemisphere[i]}_{name17[i]}_{numbering[key]}")
        relabel[i + 1] = len(new_names)
    return relabel[cortical], new_names


def label_table_colours(names: list, kind: str) -> list:
    """Hex colours for a label table: by network for the cortex, fixed hues otherwise."""
    if kind == "cortical":
        return [_NETWORK_COLOURS[name.split("_")[2]] for name in names]
    palette = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2"]
    return [palette[i % len(palette)] for i in range(len(names))]
