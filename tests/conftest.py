"""Shared fixtures: a tiny synthetic dataset built once per test session."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from brainscale.config import validate_config
from brainscale.simulate import simulate_dataset

REPO = Path(__file__).resolve().parents[1]
MINIMAL_CONFIG = REPO / "tests" / "configs" / "minimal.yaml"


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
