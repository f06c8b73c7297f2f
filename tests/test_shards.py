"""Shards, splits and the training reader."""

from __future__ import annotations

import json
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import pytest
import torch
from torch.utils.data import DataLoader

from brainscale.cli import main
from brainscale.config import validate_config
from brainscale.shards.reader import ShardCorrupted, ShardDataset, shard_paths, subjects_from_shards, verify_shards
from brainscale.shards.splits import SplitError, pretraining_subsets, probe_split, write_splits
from brainscale.shards.writer import ShardError, write_shards

CONFIG = validate_config({})


def test_layout_and_dtypes(shards, preprocessed):
    files, _, _ = preprocessed
    manifest = json.loads((shards / "manifest.json").read_text())
    assert manifest["n_runs"] == len(files) and len(manifest["shards"]) == -(-len(files) // 3)
    assert (shards / "network_mapping.npz").is_file()
    for path in shard_paths(shards):
        with h5py.File(path, "r") as shard:
            n = len(shard["long_subject_id"])
            assert n <= 3
            length = shard["timeseries/schaefer400"].shape[2]
            for name, channels in (("schaefer400", 400), ("tian3", 50), ("buckner7", 7)):
                dataset = shard[f"timeseries/{name}"]
                assert dataset.shape == (n, channels, length) and dataset.dtype == np.float32
                assert dataset.chunks == (1, channels, length)  # one run, one chunk
                assert dataset.compression == "gzip"
            assert shard["long_subject_id"].dtype.kind == "S"
            assert shard["ts_len"].dtype == np.int32
            assert shard["sex_bi"].shape == (n,) and set(np.unique(shard["sex_bi"][:])) <= {0.0, 1.0}
            assert shard["age"].dtype == np.float64


def test_round_trip_and_nan_padding(shards, preprocessed):
    files, _, _ = preprocessed
    originals = {}
    for file in files:
        with np.load(file) as archive:
            originals[str(archive["run_id"])] = archive["timeseries"]
    seen = 0
    for path in shard_paths(shards):
        with h5py.File(path, "r") as shard:
            for row, run_id in enumerate(shard["run_id"][:]):
                original = originals[run_id.decode()]
                stored = np.concatenate([shard[f"timeseries/{n}"][row] for n in ("schaefer400", "tian3", "buckner7")])
                length = int(shard["ts_len"][row])
                assert length == original.shape[1]
                np.testing.assert_array_equal(stored[:, :length], original)
                assert np.isnan(stored[:, length:]).all()
                seen += 1
    assert seen == len(files)


def test_float16_is_close(preprocessed, tmp_path):
    files, phenotypes, mapping = preprocessed
    write_shards(files[:2], phenotypes, mapping, CONFIG["shards"], tmp_path / "half", log=lambda line: None)
    with h5py.File(shard_paths(tmp_path / "half")[0], "r") as shard, np.load(files[0]) as archive:
        assert shard["timeseries/schaefer400"].dtype == np.float16
        row = [r.decode() for r in shard["run_id"][:]].index(str(archive["run_id"]))
        length = int(shard["ts_len"][row])
        np.testing.assert_allclose(shard["timeseries/schaefer400"][row, :, :length], archive["timeseries"][:400],
                                   atol=5e-3, rtol=1e-3)


def test_runs_of_a_subject_share_its_id(shards):
    subjects = {}
    for path in shard_paths(shards):
        with h5py.File(path, "r") as shard:
            for subject, run in zip(shard["long_subject_id"][:], shard["run_id"][:]):
                assert run.decode().startswith(subject.decode())
                subjects.setdefault(subject, []).append(run)
    assert any(len(runs) > 1 for runs in subjects.values())


def test_missing_label_is_kept_as_nan_and_counted(preprocessed, tmp_path):
    files, phenotypes, mapping = preprocessed
    dropped = phenotypes.index[0]
    manifest = write_shards(files, phenotypes.drop(index=dropped), mapping, CONFIG["shards"], tmp_path / "s",
                            log=lambda line: None)
    runs_of_dropped = sum(Path(f).name.startswith(dropped) for f in files)
    assert runs_of_dropped > 0
    assert manifest["labels"]["sex_bi"]["runs_missing_label"] == runs_of_dropped
    subjects = subjects_from_shards(shard_paths(tmp_path / "s"), labels=["sex_bi", "age"])
    assert np.isnan(subjects.loc[dropped, "sex_bi"]) and subjects["sex_bi"].drop(index=dropped).notna().all()


def test_runs_with_other_channel_counts_are_refused(preprocessed, tmp_path):
    files, phenotypes, mapping = preprocessed
    odd = tmp_path / "odd_desc-clean_timeseries.npz"
    with np.load(files[0]) as archive:
        content = dict(archive)
    content["timeseries"] = content["timeseries"][:400]
    np.savez(odd, **content)
    with pytest.raises(ShardError, match=r"odd_desc-clean_timeseries.npz: runs have \[400, 457\] channels"):
        write_shards([files[1], str(odd)], phenotypes, mapping, CONFIG["shards"], tmp_path / "bad")
    assert not (tmp_path / "bad").exists()


def test_corruption_is_reported_by_verify_and_the_reader(shards, tmp_path, capsys):
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(shards, copy)
    assert verify_shards(copy) == [] and main(["verify", str(copy)]) == 0
    victim = shard_paths(copy)[1]
    raw = bytearray(victim.read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    victim.write_bytes(bytes(raw))
    problems = verify_shards(copy)
    assert len(problems) == 1 and victim.name in problems[0] and "SHA-256 differs" in problems[0]
    assert main(["verify", str(copy)]) == 1
    assert victim.name in capsys.readouterr().err
    with pytest.raises(ShardCorrupted, match=victim.name):
        ShardDataset(shard_paths(copy))


# --- splits -----------------------------------------------------------------------------------

def fake_subjects(n: int, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    sex = rng.integers(0, 2, n).astype(float)
    sex[:5] = np.nan  # unlabelled subjects can only pretrain
    return pd.DataFrame({"sex_bi": sex, "age": rng.uniform(20, 80, n)},
                        index=pd.Index([f"sub-{i:04d}" for i in range(n)], name="subject"))


def test_probe_split_is_disjoint_stratified_and_deterministic():
    subjects = fake_subjects(400)
    split = probe_split(subjects, fraction=0.3, proportions=[0.6, 0.2, 0.2], stratify="sex_bi", seed=3)
    parts = [set(split[name]) for name in ("train", "val", "test", "pool")]
    assert sum(map(len, parts)) == len(subjects) and len(set().union(*parts)) == len(subjects)
    probe = set(split["train"]) | set(split["val"]) | set(split["test"])
    assert not probe & set(subjects.index[subjects["sex_bi"].isna()])
    assert abs(len(probe) - 0.3 * subjects["sex_bi"].notna().sum()) <= 2
    overall = subjects["sex_bi"].mean()
    for name in ("train", "val", "test"):
        assert abs(subjects.loc[split[name], "sex_bi"].mean() - overall) < 0.1
    again = probe_split(subjects, fraction=0.3, proportions=[0.6, 0.2, 0.2], stratify="sex_bi", seed=3)
    assert all(np.array_equal(split[k], again[k]) for k in split)
    other = probe_split(subjects, fraction=0.3, proportions=[0.6, 0.2, 0.2], stratify="sex_bi", seed=4)
    assert not np.array_equal(split["test"], other["test"])


def test_pretraining_subsets_nest_and_exclude_the_probe_set():
    subjects = fake_subjects(400)
    split = probe_split(subjects, fraction=0.3, proportions=[0.6, 0.2, 0.2], stratify="sex_bi", seed=0)
    subsets = pretraining_subsets(split["pool"], [10, 50, 200], [0, 1])
    probe = set(split["train"]) | set(split["val"]) | set(split["test"])
    for seed in (0, 1):
        assert set(subsets[(10, seed)]) < set(subsets[(50, seed)]) < set(subsets[(200, seed)])
        for size in (10, 50, 200):
            assert len(subsets[(size, seed)]) == size and not set(subsets[(size, seed)]) & probe
    assert set(subsets[(50, 0)]) != set(subsets[(50, 1)])
    assert all(np.array_equal(subsets[k], v) for k, v in pretraining_subsets(split["pool"], [10, 50, 200],
                                                                              [0, 1]).items())
    with pytest.raises(SplitError, match=f"exceed the pretraining pool of {len(split['pool'])} subjects"):
        pretraining_subsets(split["pool"], [10, 10_000], [0])


def test_write_splits_saves_npy_and_tsv(tmp_path):
    settings = dict(CONFIG["splits"], pretrain_sizes=[5, 20])
    summary = write_splits(fake_subjects(120), settings, tmp_path / "splits")
    ids = np.load(tmp_path / "splits" / "pretrain_n-20_seed-0.npy")
    assert ids.dtype.kind == "S" and len(ids) == 20 == summary["pretrain_n-20_seed-0"]
    table = pd.read_csv(tmp_path / "splits" / "probe_test.tsv", sep="\t")
    assert list(table["participant_id"]) == [i.decode() for i in np.load(tmp_path / "splits" / "probe_test.npy")]


# --- reader -----------------------------------------------------------------------------------

def test_reader_yields_one_clean_crop_per_subject(shards):
    dataset = ShardDataset(shard_paths(shards), seed=1)
    assert dataset._datasets == {} and dataset._pid is None  # nothing opened before workers fork
    subjects = subjects_from_shards(shard_paths(shards), labels=["sex_bi"])
    assert len(dataset) == len(subjects)
    for item in range(len(dataset)):
        x, missing, subject = dataset[item]
        assert x.shape == (457, 100) and x.dtype == torch.float32 and missing.shape == (457,)
        assert torch.isfinite(x).all() and subject == item


def test_reader_is_deterministic_across_workers_and_preload(shards):
    lazy = ShardDataset(shard_paths(shards), seed=5)
    serial = torch.stack([x for x, _, _ in DataLoader(lazy, batch_size=None, num_workers=0)])
    parallel = torch.stack([x for x, _, _ in DataLoader(lazy, batch_size=None, num_workers=2)])
    preloaded = ShardDataset(shard_paths(shards), seed=5, preload=True)
    assert torch.equal(serial, parallel)
    assert torch.equal(serial, torch.stack([preloaded[i][0] for i in range(len(preloaded))]))
    lazy.set_epoch(1)
    assert not torch.equal(serial, torch.stack([lazy[i][0] for i in range(len(lazy))]))


def test_reader_subset_and_evaluation_crops(shards):
    subjects = subjects_from_shards(shard_paths(shards), labels=["sex_bi"]).index[:3]
    dataset = ShardDataset(shard_paths(shards), subjects=subjects, crops="eval", n_eval_crops=8)
    assert sorted(dataset.subject_ids) == sorted(subjects)
    assert len(dataset) == 8 * len(dataset.runs)
    block, _ = dataset.read_run(0)
    starts = dataset.eval_starts(block.shape[1])
    assert starts[0] == 0 and starts[-1] == block.shape[1] - 100 and len(starts) == 8
    np.testing.assert_allclose(starts, np.linspace(0, block.shape[1] - 100, 8), atol=0.5)  # evenly spaced
    first = [dataset[i][0] for i in range(8)]
    assert torch.equal(first[3], torch.from_numpy(block[:, starts[3]:starts[3] + 100]))
    assert torch.equal(first[0], dataset[0][0])  # deterministic
    with pytest.raises(ValueError, match="no run of the requested subjects"):
        ShardDataset(shard_paths(shards), subjects=["sub-9999"])


def test_reader_cuts_a_run_at_the_first_nan_of_any_channel(tmp_path):
    folder = tmp_path / "handmade"
    folder.mkdir()
    length = 200
    with h5py.File(folder / "shard-00000.h5", "w") as shard:
        data = np.random.default_rng(0).standard_normal((1, 457, length)).astype(np.float32)
        data[0, 430, 150:] = np.nan  # a subcortical channel ends early; ROI 0 is fine
        for name, start, stop in (("schaefer400", 0, 400), ("tian3", 400, 450), ("buckner7", 450, 457)):
            shard[f"timeseries/{name}"] = data[:, start:stop]
        shard["long_subject_id"] = np.array([b"sub-1"])
        shard["ts_len"] = np.array([length], dtype=np.int32)
    from brainscale.shards.writer import sha256_of

    (folder / "manifest.json").write_text(json.dumps({"shards": [
        {"file": "shard-00000.h5", "rows": 1, "subjects": 1, "sha256": sha256_of(folder / "shard-00000.h5")}]}))
    dataset = ShardDataset(shard_paths(folder), seed=0)
    block, missing = dataset.read_run(0)
    assert block.shape == (457, 150) and not missing.any()
    for epoch in range(20):
        dataset.set_epoch(epoch)
        assert torch.isfinite(dataset[0][0]).all()


def test_distant_views_keep_their_gap_and_cross_run_views_use_two_runs(shards):
    from brainscale.shards.reader import distant_starts

    rng = np.random.default_rng(0)
    for length in (100, 150, 260, 400):
        for _ in range(200):
            starts = distant_starts(rng, length, 100, 100)
            assert all(0 <= s <= length - 100 for s in starts)
            assert abs(starts[0] - starts[1]) >= min(100, length - 100)  # no overlap where the run allows
    independent = ShardDataset(shard_paths(shards), views=2, seed=0)
    with pytest.raises(ValueError, match="use views=2"):
        ShardDataset(shard_paths(shards), views=1, view_mode="distant")
    several = [i for i, runs in enumerate(independent.runs_of_subject) if len(runs) > 1]
    assert several, "the minimal dataset has subjects with repeated runs"
    cross = ShardDataset(shard_paths(shards), views=2, view_mode="cross_run", seed=0)
    item = several[0]
    for epoch in range(5):
        (run_a, _), (run_b, _) = cross._random_views(item, epoch)
        assert run_a != run_b and {run_a, run_b} <= set(cross.runs_of_subject[item])
        x, missing, subject = cross[(epoch, item)]
        assert x.shape == (2, 457, 100) and subject == item
    # an item asked for as (pass, item) is the item of that pass
    independent.set_epoch(3)
    assert torch.equal(independent[item][0], independent[(3, item)][0])
