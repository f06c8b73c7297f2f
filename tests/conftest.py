"""Shared fixtures: a tiny synthetic dataset built once per test session."""

from __future__ import annotations

import ast
import os
from pathlib import Path

import pytest
import torch
import yaml

from brainscale.config import validate_config
from brainscale.preprocessing.batch import TIMESERIES_SUFFIX, preprocess_batch, write_network_mapping
from brainscale.preprocessing.discovery import find_runs, load_participants
from brainscale.shards.writer import write_shards
from brainscale.simulate import simulate_dataset
from brainscale.simulate.dataset import SPACE, demo_atlas_paths

CONFIG = validate_config({})

REPO = Path(__file__).resolve().parents[1]
MINIMAL_CONFIG = REPO / "tests" / "configs" / "minimal.yaml"
REFERENCE_KEYS = REPO / "tests" / "data" / "semantoks-state-dict.tsv"
#: The environment of a test's ``snakemake`` process that needs no Slurm. Where Slurm's client commands
#: are installed but no controller answers (a build machine after the real-Slurm test), every
#: ``snakemake`` start waits about 9 s in the Slurm executor plugin's import for ``scontrol show
#: config`` to time out; tests/slurm-stubs has commands of the same names that fail at once.
#: tests/test_slurm.py runs the real ones.
SNAKEMAKE_ENV = dict(os.environ, PATH=f"{REPO / 'tests' / 'slurm-stubs'}{os.pathsep}{os.environ.get('PATH', '')}")


def minimal_settings(**overrides) -> dict:
    """The validated 'simulate' section of the minimal test config, with overrides."""
    raw = yaml.safe_load(MINIMAL_CONFIG.read_text())
    raw["simulate"].update(overrides)
    return validate_config(raw)["simulate"]


@pytest.fixture(scope="session")
def tiny_dataset(tmp_path_factory) -> Path:
    """A synthetic dataset from tests/configs/minimal.yaml (parcel ground truth saved)."""
    root = tmp_path_factory.mktemp("synthetic") / "dataset"
    simulate_dataset(minimal_settings(), root, n_jobs=2, log=lambda line: None)
    return root


@pytest.fixture(scope="session")
def preprocessed(tiny_dataset, tmp_path_factory):
    """Preprocessed runs of the tiny dataset: (run files, phenotypes, network mapping path)."""
    folder = tmp_path_factory.mktemp("preprocessed")
    atlases = demo_atlas_paths(tiny_dataset, 6)
    runs = find_runs(tiny_dataset / "fmriprep", space=SPACE, task="rest")
    preprocess_batch(runs, atlases, CONFIG["preprocess"], folder / "batch", space=SPACE, log=lambda line: None)
    write_network_mapping(atlases, folder / "network_mapping.npz", folder / "channels.tsv")
    phenotypes = load_participants(tiny_dataset / "fmriprep" / "participants.tsv", CONFIG["data"]["phenotypes"])
    files = sorted(str(p) for p in (folder / "batch").glob(f"*{TIMESERIES_SUFFIX}"))
    return files, phenotypes, folder / "network_mapping.npz"


@pytest.fixture(scope="session")
def shards(preprocessed, tmp_path_factory):
    files, phenotypes, mapping = preprocessed
    settings = dict(CONFIG["shards"], max_runs_per_shard=3, dtype="float32")
    folder = tmp_path_factory.mktemp("shards") / "shards"
    write_shards(files, phenotypes, mapping, settings, folder, log=lambda line: None)
    return folder


@pytest.fixture(scope="session")
def reference_state() -> dict:
    """Random tensors under every teacher key of the reference checkpoint, with its shapes."""
    generator = torch.Generator().manual_seed(0)
    state = {}
    for line in REFERENCE_KEYS.read_text().splitlines():
        if line.startswith("#") or not line.strip():
            continue
        name, shape, dtype = line.split("\t")
        shape = ast.literal_eval(shape)
        shape = (shape,) if isinstance(shape, int) else tuple(shape)
        if dtype == "bool":
            state[name] = torch.tensor(True)
        else:
            state[name] = torch.randn(shape, generator=generator)
    from brainscale.models.layers import sincos_embedding

    state["teacher_encoder.inter_network_transformer.temporal_pos_embedding"] = sincos_embedding(5, 768)
    for kind in ("tian3", "buckner7"):  # the reference's unused tokenizer sets
        state[f"teacher_encoder.network_tokenizers.{kind}.0.norm.weight"] = torch.ones(768)
    return state
