"""Pretraining objectives, one module each (see :mod:`.base`), and the run names that select them.

A run name is ``{objective}-{size}`` (``semantoks-tiny``, ``jepa-small``): the objective's
``name`` and one of its ``presets``. Every module of this package that defines a subclass of
:class:`~.base.Objective` with a ``name`` is found; adding an objective touches nothing else.
"""

from __future__ import annotations

import importlib
import pkgutil
from functools import lru_cache

from ..training.errors import TrainingError
from .base import TRAINING_KEYS, Objective, PretrainingData, Step, token_features

__all__ = ["Objective", "PretrainingData", "Step", "available_objectives", "get_objective", "parse_run_name",
           "run_settings", "token_features"]


@lru_cache(maxsize=1)
def available_objectives() -> dict:
    """name -> Objective subclass, for every objective module of this package."""
    found = {}
    for module in pkgutil.iter_modules(__path__):
        imported = importlib.import_module(f"{__name__}.{module.name}")
        for value in vars(imported).values():
            if isinstance(value, type) and issubclass(value, Objective) and value is not Objective \
                    and getattr(value, "name", None) and value.__module__ == imported.__name__:
                found[value.name] = value
    return dict(sorted(found.items()))


def get_objective(name: str) -> type:
    """The Objective class called ``name``."""
    objectives = available_objectives()
    if name not in objectives:
        raise TrainingError(f"unknown objective '{name}': the objectives are {sorted(objectives)} "
                            "(a run name is objective-size, e.g. semantoks-tiny).")
    return objectives[name]


def parse_run_name(run: str) -> tuple[type, str]:
    """``"jepa-tiny"`` -> (the JEPA Objective class, ``"tiny"``)."""
    name, dash, size = str(run).partition("-")
    if not dash or not size:
        raise TrainingError(f"pretrain.objectives: '{run}' is not objective-size (e.g. semantoks-tiny); the "
                            f"objectives are {sorted(available_objectives())}.")
    objective = get_objective(name)
    if size not in objective.presets:
        raise TrainingError(f"pretrain.objectives: '{run}': {name} has no size '{size}'; its sizes are "
                            f"{sorted(objective.presets)}.")
    return objective, size


def run_settings(pretrain: dict, run: str) -> dict:
    """The settings of one run: the ``pretrain`` section with the run's objective and size, and
    the shared training keys the objective's defaults and ``pretrain.options`` set for it.

    The list of runs and the other objectives' options are left out: listing another run, or
    changing another objective's options, leaves this run's settings (and its Snakemake job) as
    they were."""
    objective, size = parse_run_name(run)
    options = (pretrain.get("options") or {}).get(objective.name, {})
    training = {key: value for source in (objective.defaults, options) for key, value in source.items()
                if key in TRAINING_KEYS}
    shared = {key: value for key, value in pretrain.items() if key not in ("objectives", "options")}
    return {**shared, **training, "options": {objective.name: options} if options else {},
            "objective": objective.name, "model": size}
