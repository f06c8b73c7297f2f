"""Objectives are plug-ins: a package outside brainscale adds one with no other change, and checking
a config (or a Snakemake dry run) imports no torch."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from brainscale.config import ConfigError, validate_config
from brainscale.objectives import available_objectives, run_spec

REPO = Path(__file__).resolve().parents[1]
TOY = Path(__file__).parent / "data" / "toy_objective"


def install_toy(folder: Path, monkeypatch, *, name: str = "toy") -> None:
    """The toy objective (tests/data/toy_objective) as an installed distribution would offer it: a
    package on the path and a ``brainscale.objectives`` entry point; ``name`` replaces its name."""
    shutil.copytree(TOY, folder / "toy_objective")
    spec = folder / "toy_objective" / "spec.py"
    spec.write_text(spec.read_text().replace('name="toy"', f'name="{name}"'))
    info = folder / "toy_objective-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: toy-objective\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[brainscale.objectives]\ntoy = toy_objective.spec\n")
    monkeypatch.syspath_prepend(str(folder))
    available_objectives.cache_clear()


@pytest.fixture
def toy_plugin(tmp_path, monkeypatch):
    install_toy(tmp_path, monkeypatch)
    yield
    forget_toy()


def forget_toy() -> None:
    available_objectives.cache_clear()
    for name in [name for name in sys.modules if name.startswith("toy_objective")]:
        del sys.modules[name]


@pytest.mark.parametrize("name, words", [("semantoks", "objective 'semantoks' is already defined"),
                                         ("toy-net", "must be lower-case letters and digits")])
def test_a_plugin_that_takes_a_builtin_name_or_a_bad_one_is_refused(tmp_path, monkeypatch, name, words):
    install_toy(tmp_path, monkeypatch, name=name)
    try:
        with pytest.raises(ConfigError, match=words):
            available_objectives()
    finally:
        forget_toy()


def test_a_plugin_objective_is_configured_trained_exported_embedded_and_probed(toy_plugin, shards, tmp_path):
    from brainscale.probing.checkpoints import write_random_encoder
    from brainscale.probing.embeddings import embed_checkpoint, read_features
    from brainscale.probing.probes import probe_features, resolve_tasks
    from brainscale.objectives.base import PretrainingData
    from brainscale.shards.reader import shard_paths, subjects_from_shards
    from brainscale.shards.splits import write_splits
    from brainscale.training.loop import pretrain

    assert "toy" in available_objectives()
    config = validate_config({"pretrain": {"objectives": ["toy-tiny", "semantoks-tiny"], "batch_size": 2,
                                           "device": "cpu", "options": {"toy": {"noise_sd": 0.2}},
                                           "budget": {"unit": "steps", "total": 4, "warmup": 1}}})
    with pytest.raises(ConfigError, match=r"pretrain.options.toy.noise_sd': -1 is less than the minimum of 0"):
        validate_config({"pretrain": {"objectives": ["toy-tiny"], "options": {"toy": {"noise_sd": -1}}}})
    run = run_spec(config["pretrain"], "toy-tiny")
    assert (run.options["noise_sd"], run.training["base_lr"], run.architecture["width"]) == (0.2, 0.01, 16)

    labels = subjects_from_shards(shard_paths(shards), labels=["age"])
    subjects = labels.index.to_numpy()
    export = pretrain(run, shards, subjects[:4], tmp_path / "run", log=lambda line: None)
    log = pd.read_csv(tmp_path / "run" / "log.csv")
    assert list(log.columns[4:5]) == ["reconstruction"] and np.isfinite(log["loss"]).all()

    splits = tmp_path / "splits"
    write_splits(labels, dict(config["splits"], probe_fraction=0.67, probe_proportions=[1, 1, 1], stratify=None,
                              pretrain_sizes=[2]), splits)
    embed = dict(config["embed"], n_crops=2, cache_dir=str(tmp_path / "cache"))
    write_random_encoder(run, PretrainingData(shards, tuple(subjects[:4]), 0), 3, tmp_path / "random.pt")
    for checkpoint in (export, tmp_path / "random.pt"):
        features = tmp_path / f"{checkpoint.stem}.h5"
        embed_checkpoint(checkpoint, shards, splits, features, embed)
        table = read_features(features)
        assert table.features["mean"].shape[1:] == (1, 16)
        tasks = resolve_tasks({"age": {"label": "age"}}, config["shards"]["labels"])
        metrics, _ = probe_features(table, labels, tasks, split_seeds=[0], proportions=[1, 1, 1],
                                    grid=[1.0, 100.0], n_folds=2, subject_reid=False)
        # the tiny dataset leaves one test subject: an error, no R2
        assert set(metrics["task"]) == {"age"} and set(metrics["feature"]) == {"cls", "mean", "cls_avg"}
        assert np.isfinite(metrics["mae"]).all() and (metrics["n_train"] > 0).all()


TORCH_FREE = """
import atexit, sys
atexit.register(lambda: print("torch imported" if "torch" in sys.modules else "torch-free", file=sys.stderr))
atexit.register(lambda: print(*(f"imported: {{name}}" for name in ("nibabel", "sklearn") if name in sys.modules),
                              file=sys.stderr))
{body}
"""


def test_checking_a_config_imports_no_torch(tmp_path):
    body = ("from brainscale.config import load_config\nfrom brainscale.objectives import run_spec\n"
            f"config = load_config({str(REPO / 'config' / 'comparison.yaml')!r})\n"
            "specs = [run_spec(config['pretrain'], run) for run in config['pretrain']['objectives']]\n"
            "assert len(specs) == 8\n")
    result = subprocess.run([sys.executable, "-c", TORCH_FREE.format(body=body)], capture_output=True, text=True,
                            cwd=tmp_path)
    assert result.returncode == 0 and result.stderr.strip().endswith("torch-free"), result.stderr[-2000:]


def test_a_snakemake_dry_run_imports_no_torch(tmp_path):
    body = ("from snakemake.cli import main\n"
            f"sys.argv = ['snakemake', '-n', '-s', {str(REPO / 'Snakefile')!r}, '--cores', '1', '--configfile', "
            f"{str(REPO / 'config' / 'comparison.yaml')!r}]\nmain()\n")
    result = subprocess.run([sys.executable, "-c", TORCH_FREE.format(body=body)], capture_output=True, text=True,
                            cwd=tmp_path, timeout=300)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    assert result.stderr.strip().endswith("torch-free"), result.stderr[-2000:]
    # nor the simulator's libraries: the parse needs only the simulated atlases' names (simulate.layout)
    assert "imported: nibabel" not in result.stderr and "imported: sklearn" not in result.stderr, result.stderr[-2000:]
