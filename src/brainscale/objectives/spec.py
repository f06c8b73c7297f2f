"""What a workflow needs to know of an objective before anything trains, and the frozen settings of
one run. Torch-free: validating a config and ``snakemake -n`` import only this.

An objective's ``spec.py`` defines ``SPEC``, an :class:`ObjectiveSpec`: its name, its ``presets``
(the ``{size}`` of a run name ``{objective}-{size}``), its options (a JSON schema per option, with
its default), its loss terms, the shared training keys it sets for itself, and a config-time
``check`` of a :class:`RunSpec`. The model and the training code are found from ``entry``
(``"objective:BrainJEPA"``: that class of the package's ``objective`` module) only when a run trains
or an export loads.

A :class:`RunSpec` is built once from the ``pretrain`` section (:func:`build_run_spec`): the preset
with the architecture overrides, every option with its default, the training keys with the
objective's own values. The workflow passes it to the job, which writes it beside the run
(``run.yaml``); torchrun and ``brainscale pretrain`` read that file.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field, fields
from pathlib import Path
from types import MappingProxyType
from typing import Callable, Mapping

import yaml
from jsonschema import Draft202012Validator

from ..errors import ConfigError

__all__ = ["TRAINING_KEYS", "ObjectiveSpec", "RunSpec", "build_run_spec", "RUN_FILE"]

#: Shared ``pretrain`` keys that an objective's spec or ``pretrain.options.<name>`` may set for that objective.
TRAINING_KEYS = ("base_lr", "weight_decay", "momentum", "grad_clip")
#: The keys of the ``pretrain`` section that are not a run's training settings.
_NOT_TRAINING = ("objectives", "options", "architecture")
#: The run specification beside every run's outputs.
RUN_FILE = "run.yaml"
RUN_FORMAT = "brainscale-run-1"


@dataclass(frozen=True)
class ObjectiveSpec:
    """An objective as the config sees it (see the module docstring).

    Parameters
    ----------
    name : str
        The objective's name, the first half of its run names.
    presets : mapping
        size -> architecture (the config dataclass's keyword arguments).
    options : mapping
        option -> JSON schema of its value, with ``default``.
    loss_terms : tuple of str
        The loss terms besides ``total`` (columns of ``log.csv``).
    training_defaults : mapping
        Values of :data:`TRAINING_KEYS` that replace the top-level ``pretrain`` ones for this objective.
    config : type, optional
        The encoder config dataclass: the architecture keys ``pretrain.options.<name>.architecture`` may
        set, and their types, are its fields but ``derived`` (without ``config``: the presets' keys).
    derived : tuple of str
        Config fields that are not architecture overrides: the data or the options set them
        (default ``("network_map",)``).
    check : callable, optional
        ``check(run)`` for a :class:`RunSpec`: raise :class:`~brainscale.errors.ConfigError` naming the key.
    entry : str
        ``"module:Class"``, relative to the spec's package: the ``Objective`` subclass that trains.
    package : str
        The spec's package (set when the objective is found).
    """

    name: str
    presets: Mapping
    options: Mapping = field(default_factory=dict)
    loss_terms: tuple = ()
    training_defaults: Mapping = field(default_factory=dict)
    config: type | None = None
    derived: tuple = ("network_map",)
    check: Callable | None = None
    entry: str = "objective:Objective"
    package: str = ""

    @property
    def defaults(self) -> dict:
        """The options' defaults."""
        return {key: copy.deepcopy(schema.get("default")) for key, schema in self.options.items()}

    def architecture_schema(self, shared: Mapping | None = None) -> dict:
        """key -> JSON schema of the architecture keys a run may override: typed from the config's fields
        (positive), with the bounds of the ``pretrain.architecture`` key of the same name (``shared``)."""
        types = {f.name: _json_type(f.type) for f in fields(self.config)} if self.config is not None else {}
        keys = [name for name in types if name not in self.derived] or \
            {key for preset in self.presets.values() for key in preset}
        bounds = {key: {k: v for k, v in schema.items() if k in ("minimum", "maximum")}
                  for key, schema in (shared or {}).items()}
        return {key: {**types.get(key, {}), **bounds.get(key, {})} for key in sorted(keys)}

    def options_schema(self, training_schemas: Mapping) -> dict:
        """The JSON schema of ``pretrain.options.<name>``: the options, the training keys (their schemas
        from the ``pretrain`` section's) and ``architecture``, nothing else."""
        properties = {key: {k: v for k, v in schema.items() if k != "default"}
                      for key, schema in [*self.options.items(), *((k, training_schemas[k]) for k in TRAINING_KEYS)]}
        shared = training_schemas.get("architecture", {}).get("properties")
        properties["architecture"] = {"type": "object", "additionalProperties": False,
                                      "properties": self.architecture_schema(shared)}
        return {"type": "object", "additionalProperties": False, "properties": properties}

    def validate_options(self, options: Mapping, training_schemas: Mapping) -> None:
        """Raise ConfigError for every key of ``options`` the schema refuses (unknown keys too)."""
        validator = Draft202012Validator(self.options_schema(training_schemas))
        errors = sorted(validator.iter_errors(dict(options)), key=lambda e: list(e.absolute_path))
        if errors:
            lines = [f"  - config key 'pretrain.options.{self.name}"
                     f"{''.join('.' + str(p) for p in e.absolute_path)}': {e.message}" for e in errors]
            takes = sorted([*self.options, *TRAINING_KEYS, "architecture"])
            raise ConfigError("Invalid objective options:\n" + "\n".join(lines) +
                              f"\n{self.name} takes {takes} (docs/objectives.md).")


#: JSON types of the annotations config fields use (``int | None`` -> ``["integer", "null"]``).
_JSON_TYPES = {"int": "integer", "float": "number", "bool": "boolean", "str": "string", "list": "array",
               "None": "null"}


def _json_type(annotation) -> dict:
    """The JSON schema of a dataclass field's (string) annotation, sizes and ratios positive; ``{}``
    (anything) where it is not simple."""
    names = [part.strip() for part in str(annotation).split("|")]
    kinds = [_JSON_TYPES.get(name) for name in names]
    if None in kinds:
        return {}
    schema = {"type": kinds[0] if len(kinds) == 1 else kinds}
    if "integer" in kinds:
        schema["minimum"] = 1
    elif "number" in kinds:
        schema["exclusiveMinimum"] = 0
    return schema


def _freeze(value):
    """A read-only copy: mappings become mapping proxies, lists tuples."""
    if isinstance(value, Mapping):
        return MappingProxyType({key: _freeze(item) for key, item in value.items()})
    if isinstance(value, (list, tuple)):
        return tuple(_freeze(item) for item in value)
    return value


def plain(value):
    """Plain dicts and lists again (for YAML, torch.save and comparisons with a loaded copy)."""
    if isinstance(value, Mapping):
        return {key: plain(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(item) for item in value]
    return value


@dataclass(frozen=True)
class RunSpec:
    """Everything one run trains with, resolved once (see :func:`build_run_spec`); read-only.

    ``architecture`` is the preset with the overrides (the data add the channel layout),
    ``options`` the objective's options with their defaults, ``training`` the shared settings
    (budget, batch, optimiser, device, ...) with the objective's own training keys.
    """

    run: str
    objective: str
    size: str
    architecture: Mapping
    options: Mapping
    training: Mapping

    def __post_init__(self):
        for name in ("architecture", "options", "training"):
            object.__setattr__(self, name, _freeze(getattr(self, name)))

    __hash__ = None  # mutable-looking contents; compare with ==

    def __reduce__(self):
        # mapping proxies do not pickle (DataLoader workers started by spawn pickle their dataset)
        return RunSpec.from_dict, (self.to_dict(),)

    def to_dict(self) -> dict:
        return {"format": RUN_FORMAT, "run": self.run, "objective": self.objective, "size": self.size,
                "architecture": plain(self.architecture), "options": plain(self.options),
                "training": plain(self.training)}

    @classmethod
    def from_dict(cls, data: Mapping, source: str = "the run specification") -> "RunSpec":
        """The spec of :meth:`to_dict`'s dictionary, checked again by its objective (a file may have been edited)."""
        if not isinstance(data, Mapping) or data.get("format") != RUN_FORMAT:
            raise ConfigError(f"{source} is not a brainscale run specification ({RUN_FORMAT}): it is written by "
                              "the pretrain rule (run.yaml beside the run); rebuild it with snakemake.")
        keys = ("run", "objective", "size", "architecture", "options", "training")
        missing = [key for key in keys if key not in data]
        if missing:
            raise ConfigError(f"{source} lacks {missing}: it was edited or truncated; rebuild it with snakemake.")
        from . import check_run

        return check_run(cls(**{key: data[key] for key in keys}), source)

    def write(self, path: str | Path) -> Path:
        """Write the spec as YAML (atomically)."""
        from ..io import write_text_atomic

        path = Path(path)
        write_text_atomic(path, yaml.safe_dump(self.to_dict(), sort_keys=False))
        return path

    @classmethod
    def read(cls, path: str | Path) -> "RunSpec":
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"{path}: no run specification there; the pretrain rule writes it ({RUN_FILE}).")
        return cls.from_dict(yaml.safe_load(path.read_text()), str(path))


def _with_defaults(defaults: Mapping, given: Mapping) -> dict:
    """``given`` over ``defaults``, one level deep for options that are objects (``views``)."""
    merged = dict(defaults)
    for key, value in given.items():
        default = defaults.get(key)
        merged[key] = {**default, **value} if isinstance(default, Mapping) and isinstance(value, Mapping) else value
    return merged


def build_run_spec(pretrain: Mapping, run: str, spec: ObjectiveSpec, size: str) -> RunSpec:
    """The :class:`RunSpec` of run ``run`` (objective ``spec``, preset ``size``) of a validated ``pretrain``
    section, unchecked (:func:`brainscale.objectives.run_spec` checks it). The other runs and the other objectives' options are left out,
    so that listing another run leaves this run's settings as they were."""
    given = dict((pretrain.get("options") or {}).get(spec.name) or {})
    overrides = {key: value for key, value in (pretrain.get("architecture") or {}).items() if value is not None}
    overrides.update(given.pop("architecture", None) or {})
    training = {key: value for key, value in pretrain.items() if key not in _NOT_TRAINING}
    training.update(spec.training_defaults)
    training.update({key: given.pop(key) for key in TRAINING_KEYS if key in given})
    return RunSpec(run=run, objective=spec.name, size=size, architecture={**spec.presets[size], **overrides},
                   options=_with_defaults(spec.defaults, given), training=training)
