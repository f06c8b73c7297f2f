"""The device session's preparation: what it carries completes the device's Python for the workflow.

The device machine has no package registry: the workflow runs there from ``src/`` with the packages of
its image (``benchmarks/device/image.txt``) and the wheels of ``benchmarks/device/wheels.txt``. A new
dependency that neither lists breaks the session at its first import (the simulator's ``isal`` once did).
"""

from __future__ import annotations

import re
import subprocess
import tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DEVICE = REPO / "benchmarks" / "device"
NOT_NEEDED_THERE = {"snakemake-executor-plugin-slurm"}  # the session runs Snakemake locally


def _requirements(path: Path) -> list[str]:
    """The requirement lines of a pip-style list, comments dropped."""
    lines = [line.split("#")[0].strip() for line in path.read_text().splitlines()]
    return [line for line in lines if line]


def _name(requirement: str) -> str:
    """A requirement's distribution name, canonical (PEP 503)."""
    return re.sub(r"[-_.]+", "-", re.split(r"[=<>\[ ;]", requirement)[0]).lower()


def _names(path: Path) -> list[str]:
    return [_name(line) for line in _requirements(path)]


def test_every_dependency_is_in_the_image_or_carried():
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    needed = {_name(requirement) for requirement in project["dependencies"]}
    there = set(_names(DEVICE / "image.txt")) | set(_names(DEVICE / "wheels.txt"))
    assert needed - NOT_NEEDED_THERE - there == set(), "add them to benchmarks/device/wheels.txt"


def test_the_wheel_set_pins_one_version_of_each_package():
    pins = _requirements(DEVICE / "wheels.txt")
    assert all(re.fullmatch(r"[A-Za-z0-9_.-]+==[A-Za-z0-9_.+-]+", pin) for pin in pins), pins
    names = _names(DEVICE / "wheels.txt")
    assert len(names) == len(set(names))
    assert not set(names) & set(_names(DEVICE / "image.txt")), "image.txt and wheels.txt both list it: keep one"


def test_the_session_scripts_parse():
    for script in sorted(DEVICE.glob("*.sh")):
        result = subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True)
        assert result.returncode == 0, f"{script.name}: {result.stderr}"
