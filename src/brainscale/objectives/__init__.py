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
from .spec import TRAINING_KEYS, ObjectiveSpec, RunSpec, build_run_spec, plain

__all__ = ["ObjectiveSpec", "RunSpec", "TRAINING_KEYS", "available_objectives", "get_spec", "get_objective",
           "parse_run_name", "run_spec", "check_run", "ENTRY_POINT_GROUP"]

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
                _add(found, _packaged(spec, module), module)
    for entry in metadata.entry_points(group=ENTRY_POINT_GROUP):
        loaded = entry.load()
        spec = getattr(loaded, "SPEC", loaded)
        if not isinstance(spec, ObjectiveSpec):
            raise ConfigError(f"entry point {entry.name} = {entry.value} ({ENTRY_POINT_GROUP}) is not an ObjectiveSpec "
                              "nor a module with SPEC: point it at the objective's spec module.")
        _add(found, _packaged(spec, entry.module), f"entry point {entry.name} = {entry.value}")
    return dict(sorted(found.items()))


def _add(found: dict, spec: ObjectiveSpec, source: str) -> None:
    """Register ``spec``, refusing a name that is not a run-name prefix or that another objective has."""
    if not spec.name.isalnum() or not spec.name.islower():
        raise ConfigError(f"{source}: objective name '{spec.name}' must be lower-case letters and digits (a run "
                          f"name is <name>-<size>); rename it.")
    if spec.name in found:
        raise ConfigError(f"{source}: objective '{spec.name}' is already defined by {found[spec.name].package}; "
                          "rename one of them.")
    found[spec.name] = spec


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
    return _checked(spec, build_run_spec(pretrain, run, spec, size))


def check_run(run: RunSpec, source: str = "the run specification") -> RunSpec:
    """``run`` after its objective's option schema and checks (a spec read from a file may have been edited)."""
    from ..config import pretrain_schemas

    spec = get_spec(run.objective)
    if run.size not in spec.presets or run.run != f"{run.objective}-{run.size}":
        raise ConfigError(f"{source}: run '{run.run}' is not {run.objective}-<size> with a size of {sorted(spec.presets)}.")
    spec.validate_options(plain(run.options), pretrain_schemas())
    return _checked(spec, run)


def _checked(spec: ObjectiveSpec, run: RunSpec) -> RunSpec:
    """``run`` after ``spec.check``; an objective's check that fails with a Python error (a plug-in's
    config refusing a key) becomes a ConfigError naming the run."""
    if spec.check is not None:
        try:
            spec.check(run)
        except ConfigError:
            raise
        except (TypeError, ValueError, KeyError, ZeroDivisionError) as error:
            raise ConfigError(f"pretrain.objectives: {run.run}: its settings do not build ({type(error).__name__}: "
                              f"{error}); check pretrain.architecture and pretrain.options.{spec.name}.") from None
    return run

