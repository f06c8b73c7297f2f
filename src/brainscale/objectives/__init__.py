"""Pretraining objectives, one package each, and the run names that select them.

A run name is ``{objective}-{size}`` (``semantoks-tiny``, ``jepa-small``): the objective's name and
one of its presets. An objective is a package with a torch-free ``spec.py`` (``SPEC``, an
:class:`~.spec.ObjectiveSpec`) and the code that trains (``objective.py``, see :mod:`.base`). The
objectives are every such package of this one, and every ``brainscale.objectives`` entry point of
an installed distribution (its value: the module that holds ``SPEC``, e.g. ``mypackage.spec``).
Adding one touches nothing else (docs/objectives.md, "Adding an objective").

Only this module and the specs are imported to check a config: no torch.
"""

from __future__ import annotations

import dataclasses
import importlib
import importlib.util
import pkgutil
from functools import lru_cache
from importlib import metadata

from ..errors import ConfigError
from .spec import TRAINING_KEYS, ObjectiveSpec, RunSpec, build_run_spec

__all__ = ["ObjectiveSpec", "RunSpec", "TRAINING_KEYS", "available_objectives", "get_spec", "get_objective",
           "parse_run_name", "run_spec", "ENTRY_POINT_GROUP"]

#: The entry-point group of objectives that live in other distributions.
ENTRY_POINT_GROUP = "brainscale.objectives"


def _packaged(spec: ObjectiveSpec, module: str) -> ObjectiveSpec:
    return dataclasses.replace(spec, package=module.rpartition(".")[0])


@lru_cache(maxsize=1)
def available_objectives() -> dict[str, ObjectiveSpec]:
    """name -> :class:`ObjectiveSpec` of every objective package here and of every entry point."""
    found = {}
    for package in pkgutil.iter_modules(__path__):
        module = f"{__name__}.{package.name}.spec"
        if package.ispkg and importlib.util.find_spec(module) is not None:
            spec = getattr(importlib.import_module(module), "SPEC", None)
            if spec is not None:
                found[spec.name] = _packaged(spec, module)
    for entry in metadata.entry_points(group=ENTRY_POINT_GROUP):
        loaded = entry.load()
        spec = getattr(loaded, "SPEC", loaded)
        if not isinstance(spec, ObjectiveSpec):
            raise ConfigError(f"entry point {entry.name} = {entry.value} ({ENTRY_POINT_GROUP}) is not an ObjectiveSpec "
                              "nor a module with SPEC: point it at the objective's spec module.")
        found[spec.name] = _packaged(spec, entry.module)
    return dict(sorted(found.items()))


def get_spec(name: str) -> ObjectiveSpec:
    """The :class:`ObjectiveSpec` called ``name``."""
    objectives = available_objectives()
    if name not in objectives:
        raise ConfigError(f"unknown objective '{name}': the objectives are {sorted(objectives)} "
                          "(a run name is objective-size, e.g. semantoks-tiny).")
    return objectives[name]


def get_objective(name: str) -> type:
    """The ``Objective`` subclass that trains objective ``name`` (imports torch)."""
    spec = get_spec(name)
    module, _, attribute = spec.entry.partition(":")
    return getattr(importlib.import_module(f"{spec.package}.{module}"), attribute)


def parse_run_name(run: str) -> tuple[ObjectiveSpec, str]:
    """``"jepa-tiny"`` -> (the JEPA spec, ``"tiny"``)."""
    name, dash, size = str(run).partition("-")
    if not dash or not size:
        raise ConfigError(f"pretrain.objectives: '{run}' is not objective-size (e.g. semantoks-tiny); the "
                          f"objectives are {sorted(available_objectives())}.")
    spec = get_spec(name)
    if size not in spec.presets:
        raise ConfigError(f"pretrain.objectives: '{run}': {name} has no size '{size}'; its sizes are "
                          f"{sorted(spec.presets)}.")
    return spec, size


def run_spec(pretrain: dict, run: str | None = None) -> RunSpec:
    """The :class:`RunSpec` of ``run`` (default: the first of ``pretrain.objectives``) of a validated
    ``pretrain`` section: keys that moved are named, the objective's options validated against its
    schema, the result checked by the objective."""
    from ..config import check_moved_keys, pretrain_schemas

    if run is None:
        if not pretrain.get("objectives"):
            raise ConfigError("pretrain.objectives is empty: list a run such as semantoks-tiny.")
        run = pretrain["objectives"][0]
    spec, size = parse_run_name(run)
    check_moved_keys({"pretrain": pretrain})
    spec.validate_options((pretrain.get("options") or {}).get(spec.name) or {}, pretrain_schemas())
    return build_run_spec(pretrain, run, spec, size)


def __getattr__(name: str):
    # the torch side, for code that imported it from here before objectives had folders
    if name in ("Objective", "PretrainingData", "Step", "token_features", "TrainingModel", "CropItems"):
        from . import base

        return getattr(base, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
