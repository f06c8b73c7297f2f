"""Schaefer 17-network atlases: the 7-network order comes from matching parcels, never from names.

The 7- and 17-network Schaefer-400 atlases have the same 400 parcels, but the 17-network names do
not nest in the 7-network assignment. The demo's 17-network atlas (simulate.atlas.seventeen_network_atlas)
has that real relationship: collapsing its names gives the wrong network sizes.
"""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from brainscale.config import ConfigError, resolve_inputs, validate_config
from brainscale.models.config import _PER_HEMISPHERE, reference_network_map
from brainscale.preprocessing.atlases import (NETWORKS_17, NETWORKS_17_TO_7, NETWORKS_7, SCHAEFER400_7N_SIZES,
                                              load_atlas_set, parcellation_weights)
from brainscale.preprocessing.batch import write_network_mapping
from brainscale.preprocessing.discovery import InputError
from brainscale.shards.writer import write_shards
from brainscale.simulate.atlas import build_demo_atlases, seventeen_network_atlas

STEM = "tpl-MNI152NLin2009cAsym_res-6_atlas-{atlas}_desc-{desc}_dseg"
N_VERTICES = 1500  # per hemisphere: a small surface, every parcel gets vertices


def _write_volume(folder: Path, atlas: str, desc: str, volume: np.ndarray, names: list, affine) -> dict:
    stem = folder / STEM.format(atlas=atlas, desc=desc)
    nib.save(nib.Nifti1Image(volume.astype(np.int16), affine), f"{stem}.nii.gz")
    pd.DataFrame({"index": np.arange(1, len(names) + 1), "name": names}).to_csv(f"{stem}.tsv", sep="\t", index=False)
    return {"image": f"{stem}.nii.gz", "labels": f"{stem}.tsv"}


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    """The demo atlases on a 6 mm grid: 7-network cortex, its 17-network twin, subcortex, cerebellum."""
    folder = tmp_path_factory.mktemp("atlases17")
    atlases = build_demo_atlases(resolution_mm=6, seed=21)
    cortical_17n, names_17n = seventeen_network_atlas(atlases.cortical, atlases.cortical_names, atlases.affine)
    specs = {
        "cortical": _write_volume(folder, "Schaefer2018", "400Parcels7Networks", atlases.cortical,
                                  atlases.cortical_names, atlases.affine),
        "subcortical": _write_volume(folder, "Tian", "S3", atlases.subcortical, atlases.subcortical_names,
                                     atlases.affine),
        "cerebellar": _write_volume(folder, "Buckner2011", "7Networks", atlases.cerebellar, atlases.cerebellar_names,
                                    atlases.affine),
    }
    specs_17n = dict(specs, cortical=_write_volume(folder, "Schaefer2018", "400Parcels17Networks", cortical_17n,
                                                   names_17n, atlases.affine), cortical_7n=specs["cortical"])
    return {"atlases": atlases, "specs": specs, "specs_17n": specs_17n, "cortical_17n": cortical_17n,
            "names_17n": names_17n, "folder": folder}


def _seventeen_of_seven(demo) -> np.ndarray:
    """(401,) the 17-network label of each 7-network label (0 -> 0)."""
    seven, seventeen = demo["atlases"].cortical, demo["cortical_17n"]
    relabel = np.zeros(len(demo["names_17n"]) + 1, dtype=np.int64)
    relabel[seven[seven > 0]] = seventeen[seven > 0]
    return relabel


def _write_surfaces(demo, folder: Path) -> tuple[dict, dict]:
    """The same parcels on a small surface: 7-network and 17-network .annot files of each hemisphere."""
    names_7n, names_17n = demo["atlases"].cortical_names, demo["names_17n"]
    seventeen_of = _seventeen_of_seven(demo)
    rng = np.random.default_rng(3)
    files_7n, files_17n = {}, {}
    for side, hemi in (("left", "LH"), ("right", "RH")):
        labels_7n = [k + 1 for k, name in enumerate(names_7n) if f"_{hemi}_" in name]
        labels_17n = [k + 1 for k, name in enumerate(names_17n) if f"_{hemi}_" in name]
        # Vertex -> 7-network label: every parcel at least twice, 100 medial-wall vertices.
        vertex = np.concatenate([np.repeat(labels_7n, 2), rng.choice(labels_7n, N_VERTICES - 100 - 2 * len(labels_7n)),
                                 np.zeros(100, int)])
        rng.shuffle(vertex)
        for labels, names, of_vertex, files, flavour in (
                (labels_7n, names_7n, vertex, files_7n, "7"),
                (labels_17n, names_17n, seventeen_of[vertex], files_17n, "17")):
            ctab_index = np.zeros(len(names) + 1, dtype=np.int64)
            ctab_index[labels] = np.arange(1, len(labels) + 1)  # ctab row 0 is the medial wall
            colours = np.column_stack([rng.integers(0, 255, (len(labels) + 1, 3)), np.zeros(len(labels) + 1, int)])
            path = folder / f"{hemi[0].lower()}h.Schaefer2018_400Parcels_{flavour}Networks_order.annot"
            nib.freesurfer.write_annot(str(path), ctab_index[of_vertex], colours,
                                       ["Background+FreeSurfer_Defined_Medial_Wall"] + [names[k - 1] for k in labels],
                                       fill_ctab=True)
            files[side] = str(path)
    return files_7n, files_17n


def _per_hemisphere_sizes(network_7: np.ndarray) -> tuple:
    return (tuple(np.bincount(network_7[:200], minlength=7)), tuple(np.bincount(network_7[200:], minlength=7)))


def test_demo_seventeen_network_names_do_not_nest(demo):
    """The simulator's 17-network table follows the real relationship: collapsing names is wrong."""
    seventeen_of = _seventeen_of_seven(demo)
    assert sorted(set(seventeen_of[1:])) == list(range(1, 401))  # the same 400 parcels
    network_7 = [name.split("_")[2] for name in demo["atlases"].cortical_names]
    named = [NETWORKS_17_TO_7[demo["names_17n"][seventeen_of[k + 1] - 1].split("_")[2]] for k in range(400)]
    assert sum(a != b for a, b in zip(network_7, named)) > 0
    collapsed = tuple(sum(n == net for n in named) for net in NETWORKS_7)
    assert collapsed == (47, 70, 52, 51, 24, 61, 95)  # as with the real Schaefer-400 tables


def test_volumetric_17n_atlas_is_ordered_by_its_7n_parcels(demo):
    seven = load_atlas_set(demo["specs"])
    atlases = load_atlas_set(demo["specs_17n"])
    assert _per_hemisphere_sizes(atlases.cortical_network_7) == _PER_HEMISPHERE
    assert tuple(np.bincount(atlases.cortical_network_7)) == SCHAEFER400_7N_SIZES
    np.testing.assert_array_equal(atlases.cortical_network_7, seven.cortical_network_7)
    # Channel c of the 17-network atlas is exactly the voxels of channel c of the 7-network atlas.
    as_channels_17 = np.full(401, -1)
    as_channels_17[atlases.labels["cortical"]] = np.arange(400)
    as_channels_7 = np.full(401, -1)
    as_channels_7[seven.labels["cortical"]] = np.arange(400)
    image_17 = np.asarray(atlases.images["cortical"].dataobj).astype(int)
    image_7 = np.asarray(seven.images["cortical"].dataobj).astype(int)
    np.testing.assert_array_equal(as_channels_17[image_17], as_channels_7[image_7])
    # The channel names are the 17-network ones, and their 17-network index is the map's.
    assert all(name.startswith("17Networks_") for name in atlases.names["cortical"])
    assert [NETWORKS_17[k] for k in atlases.cortical_network_17] == \
        [name.split("_")[2] for name in atlases.names["cortical"]]
    # Parcellating a grid gives the same voxels and weights as with the 7-network atlas.
    reference = seven.images["cortical"]
    for got, expected in zip(parcellation_weights(atlases, reference, bold_space=None),
                             parcellation_weights(seven, reference, bold_space=None)):
        diff = got - expected
        assert (abs(diff).max() if hasattr(diff, "nnz") else np.abs(diff).max()) == 0


def test_network_mapping_holds_the_17n_map_and_survives_sharding(demo, tmp_path):
    write_network_mapping(demo["specs_17n"], tmp_path / "network_mapping.npz", tmp_path / "channels.tsv")
    mapping = dict(np.load(tmp_path / "network_mapping.npz"))
    assert set(mapping) == {"network_map_schaefer400_7n", "network_map_schaefer400_17n", "network_map_tian3",
                            "network_map_buckner7", "channel_coordinates"}
    np.testing.assert_array_equal(mapping["network_map_schaefer400_7n"], reference_network_map()[:400])
    channels = pd.read_csv(tmp_path / "channels.tsv", sep="\t")
    names = channels["name"][channels["atlas"] == "cortical"].tolist()
    map_17n = mapping["network_map_schaefer400_17n"]
    assert map_17n.shape == (400,) and set(map_17n) == set(range(17))
    assert [NETWORKS_17[k] for k in map_17n] == [name.split("_")[2] for name in names]
    # Some channels sit in another 7-network than their 17-network name suggests.
    named = np.array([NETWORKS_7.index(NETWORKS_17_TO_7[NETWORKS_17[k]]) for k in map_17n])
    assert (named != mapping["network_map_schaefer400_7n"]).any()
    # The shards stage copies the mapping with every key.
    run = tmp_path / "sub-01_task-rest_desc-clean_timeseries.npz"
    np.savez(run, timeseries=np.zeros((457, 30), np.float32), channel_missing=np.zeros(457, bool),
             participant_id=np.str_("sub-01"), run_id=np.str_("sub-01_task-rest"))
    settings = validate_config({})["shards"]
    phenotypes = pd.DataFrame({"sex": ["F"], "age": [30.0], "fluid_intelligence": [1.0]},
                              index=pd.Index(["sub-01"], name="participant_id"))
    write_shards([run], phenotypes, tmp_path / "network_mapping.npz", settings, tmp_path / "shards", log=lambda _: None)
    copied = dict(np.load(tmp_path / "shards" / "network_mapping.npz"))
    np.testing.assert_array_equal(copied["network_map_schaefer400_17n"], map_17n)


def test_surface_17n_atlas_is_ordered_by_its_7n_parcels(demo, tmp_path):
    surface_7n, surface_17n = _write_surfaces(demo, tmp_path)
    seven = load_atlas_set(demo["specs"], surface_7n)
    atlases = load_atlas_set(dict(demo["specs"], surface_7n=surface_7n), surface_17n)
    assert _per_hemisphere_sizes(atlases.cortical_network_7) == _PER_HEMISPHERE
    np.testing.assert_array_equal(atlases.cortical_network_7, seven.cortical_network_7)
    for got, expected in zip(atlases.surface_channels, seven.surface_channels):
        np.testing.assert_array_equal(got, expected)  # each vertex in the same channel
    assert [NETWORKS_17[k] for k in atlases.cortical_network_17] == \
        [name.split("_")[2] for name in atlases.names["cortical"]]
    npz = tmp_path / "network_mapping.npz"
    write_network_mapping(dict(demo["specs"], surface_7n=surface_7n), npz, tmp_path / "channels.tsv",
                          surface=surface_17n)
    np.testing.assert_array_equal(np.load(npz)["network_map_schaefer400_17n"], atlases.cortical_network_17)


def test_a_17n_parcel_straddling_two_7n_parcels_is_refused(demo, tmp_path):
    volume = demo["cortical_17n"].copy()
    seven = demo["atlases"].cortical
    # One voxel of a 7-network parcel goes to the 17-network parcel of another.
    voxel = tuple(np.argwhere(seven == 5)[0])
    intruder = int(_seventeen_of_seven(demo)[6])
    volume[voxel] = intruder
    specs = dict(demo["specs_17n"], cortical=_write_volume(tmp_path, "Schaefer2018", "400Parcels17Networks", volume,
                                                           demo["names_17n"], demo["atlases"].affine))
    with pytest.raises(InputError, match=r"17-network parcel 17Networks_\w+ does not coincide with one 7-network "
                                         r"parcel: its \d+ voxels fall in") as error:
        load_atlas_set(specs)
    message = str(error.value)
    assert specs["cortical"]["image"] in message and specs["cortical_7n"]["image"] in message
    suspects = {demo["names_17n"][intruder - 1], demo["names_17n"][int(_seventeen_of_seven(demo)[5]) - 1]}
    assert any(f"parcel {name} does" in message for name in suspects)
    assert "Set atlases.cortical_7n to the Schaefer 7-network atlas of the same resolution" in message


def test_a_straddling_surface_parcel_is_refused(demo, tmp_path):
    surface_7n, surface_17n = _write_surfaces(demo, tmp_path)
    values, ctab, names = nib.freesurfer.read_annot(surface_17n["left"])
    first = np.flatnonzero(values == 1)[0]
    values[first] = 2  # one vertex of one parcel given to another
    nib.freesurfer.write_annot(surface_17n["left"], values, ctab, names, fill_ctab=True)
    with pytest.raises(InputError, match=r"does not coincide with one 7-network parcel: its \d+ vertices fall in.*"
                                         r"Set atlases.surface_7n"):
        load_atlas_set(dict(demo["specs"], surface_7n=surface_7n), surface_17n)


def test_a_7n_atlas_on_another_grid_is_refused(demo, tmp_path):
    atlases = demo["atlases"]
    affine = atlases.affine.copy()
    affine[:3, :3] *= 0.5  # a 3 mm atlas
    specs = dict(demo["specs_17n"], cortical_7n=_write_volume(tmp_path, "Schaefer2018", "400Parcels7Networks",
                                                              atlases.cortical, atlases.cortical_names, affine))
    with pytest.raises(InputError, match="are on different grids. Set atlases.cortical_7n"):
        load_atlas_set(specs)


def test_a_17n_atlas_without_its_7n_atlas_is_refused(demo, tmp_path):
    specs = {kind: spec for kind, spec in demo["specs_17n"].items() if kind != "cortical_7n"}
    with pytest.raises(InputError, match=r"17-network names .* Set atlases.cortical_7n to the Schaefer 7-network"):
        load_atlas_set(specs)
    surface_7n, surface_17n = _write_surfaces(demo, tmp_path)
    with pytest.raises(InputError, match=r"17-network names .* Set atlases.surface_7n to the Schaefer 7-network"):
        load_atlas_set(demo["specs"], surface_17n)
    # A 7-network "companion" that is not one.
    with pytest.raises(InputError, match="atlases.cortical_7n must be the Schaefer 7-network atlas"):
        load_atlas_set(dict(demo["specs_17n"], cortical_7n=demo["specs_17n"]["cortical"]))


def _real_data_config(tmp_path, atlases: dict, **data) -> dict:
    return {"simulate": {"enabled": False}, "data": {"derivatives": str(tmp_path), **data}, "atlases": atlases}


def test_config_asks_for_the_7n_atlas_before_any_job(demo, tmp_path):
    specs = demo["specs_17n"]
    atlases = {kind: specs[kind] for kind in ("cortical", "subcortical", "cerebellar")}
    with pytest.raises(ConfigError, match=r"config key 'atlases.cortical_7n': atlases.cortical is a Schaefer "
                                          r"17-network atlas .* Set atlases.cortical_7n.image and .labels"):
        validate_config(_real_data_config(tmp_path, atlases))
    with pytest.raises(ConfigError, match=r"'atlases.cortical_7n.labels' is not set but atlases.cortical_7n.image is"):
        half = {"image": specs["cortical_7n"]["image"]}
        validate_config(_real_data_config(tmp_path, dict(atlases, cortical_7n=half)))
    config = validate_config(_real_data_config(tmp_path, dict(atlases, cortical_7n=specs["cortical_7n"])))
    assert resolve_inputs(config)["atlases"]["cortical_7n"] == specs["cortical_7n"]
    assert load_atlas_set(resolve_inputs(config)["atlases"]).cortical_network_17 is not None
    surface = {"left": "lh.Schaefer2018_400Parcels_17Networks_order.annot",
               "right": "rh.Schaefer2018_400Parcels_17Networks_order.annot"}
    surface_atlases = {kind: specs[kind] for kind in ("subcortical", "cerebellar")}
    with pytest.raises(ConfigError, match=r"config key 'atlases.surface_7n': atlases.surface is a Schaefer 17-network"):
        validate_config(_real_data_config(tmp_path, dict(surface_atlases, surface=surface), input="surface"))
    seven = {side: path.replace("17Networks", "7Networks") for side, path in surface.items()}
    config = validate_config(_real_data_config(tmp_path, dict(surface_atlases, surface=surface, surface_7n=seven),
                                               input="surface"))
    assert resolve_inputs(config)["atlases"]["surface_7n"] == seven
    assert "cortical_7n" not in resolve_inputs(validate_config({}))["atlases"]  # the demo: 7-network names
