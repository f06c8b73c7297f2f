"""Load and validate the workflow configuration outside Snakemake.

The schema is the one ``workflow/rules/common.smk`` validates against
(``workflow/schemas/config.schema.yaml``, shipped in the package as
``brainscale/schemas/config.schema.yaml``). Both paths fill schema defaults and
then run :func:`check_config` for the rules a JSON schema cannot express.
"""

from __future__ import annotations

import copy
import math
from functools import lru_cache
from importlib import resources
from pathlib import Path

import yaml
from jsonschema import Draft202012Validator, validators

from .errors import ConfigError

__all__ = ["ConfigError", "load_schema", "pretrain_schemas", "validate_config", "check_config", "check_moved_keys",
           "resolve_inputs", "load_config"]


def load_schema() -> dict:
    """Return the workflow's JSON schema as a dictionary."""
    return copy.deepcopy(_schema())


@lru_cache(maxsize=1)
def _schema() -> dict:
    return yaml.safe_load(resources.files("brainscale").joinpath("schemas/config.schema.yaml").read_text())


def pretrain_schemas() -> dict:
    """The schemas of the ``pretrain`` section's keys (an objective's options reuse the training keys')."""
    return _schema()["properties"]["pretrain"]["properties"]


def _validator_filling_defaults():
    base = Draft202012Validator
    validate_properties = base.VALIDATORS["properties"]

    def set_defaults(validator, properties, instance, schema):
        if isinstance(instance, dict):
            for name, subschema in properties.items():
                if "default" in subschema and name not in instance:
                    instance[name] = copy.deepcopy(subschema["default"])
        yield from validate_properties(validator, properties, instance, schema)

    return validators.extend(base, {"properties": set_defaults})


def _key_path(error) -> str:
    path = ".".join(str(part) for part in error.absolute_path)
    return path or "<top level>"


def validate_config(config: dict | None, *, workflow: bool = True) -> dict:
    """Validate ``config`` against the schema and fill in defaults.

    Parameters
    ----------
    config : dict or None
        Parsed configuration (``None`` means an empty file).
    workflow : bool, default=True
        Also check what only the whole workflow needs (pretraining sizes against the simulated
        subjects); ``brainscale simulate`` checks the dataset settings alone.

    Returns
    -------
    dict
        A new dictionary with every default filled in.

    Raises
    ------
    ConfigError
        Naming the offending key, what was expected and what was found.
    """
    config = copy.deepcopy(config) if config is not None else {}
    validator = _validator_filling_defaults()(load_schema())
    errors = sorted(validator.iter_errors(config), key=lambda e: list(e.absolute_path))
    if errors:
        lines = [f"  - config key '{_key_path(e)}': {e.message}" for e in errors]
        raise ConfigError(
            "Invalid configuration:\n" + "\n".join(lines) + "\n"
            "Fix these keys (every key is documented in config/README.md)."
        )
    check_config(config, workflow=workflow)
    return config


def check_config(config: dict, *, workflow: bool = True) -> None:
    """Check the rules that the JSON schema cannot express.

    Parameters
    ----------
    config : dict
        A configuration already validated against the schema.
    workflow : bool, default=True
        Include the checks of the whole workflow (see :func:`validate_config`).

    Raises
    ------
    ConfigError
        Naming the offending key.
    """
    sites = config["simulate"]["sites"]
    names = [site["name"] for site in sites]
    duplicated = sorted({name for name in names if names.count(name) > 1})
    if duplicated:
        raise ConfigError(
            f"config key 'simulate.sites': site names must be unique, found {duplicated} "
            "more than once. Rename the duplicated sites."
        )
    for index, site in enumerate(sites):
        low, high = site["n_volumes"]
        if low > high:
            raise ConfigError(
                f"config key 'simulate.sites.{index}.n_volumes': expected [min, max] with "
                f"min <= max, received {site['n_volumes']}. Swap the two numbers."
            )
    _check_individuality(config["simulate"]["individuality"])
    _check_study(config["study"], config["splits"]["pretrain_seeds"])
    _check_preprocess(config)
    _check_labels(config)
    _check_probe(config)
    _check_objectives(config)
    if workflow:
        _check_pretraining_sizes(config)
        _check_evaluation_set(config)
    resolve_inputs(config)


# The folders of results/ that every study shares: a study of one of these names would mix its outputs in.
SHARED_RESULTS = ("preprocess", "qc", "shards", "splits", "pretrain", "baselines", "embeddings")


def _check_study(settings: dict, split_seeds: list[int]) -> None:
    if settings["name"] in SHARED_RESULTS:
        raise ConfigError(f"config key 'study.name': '{settings['name']}' is a folder of results/ that every study "
                          f"shares ({', '.join(SHARED_RESULTS)}). Name the study otherwise, e.g. "
                          f"'{settings['name']}-study'.")
    unknown = sorted(set(settings["pretrain_seeds"] or ()) - set(split_seeds))
    if unknown:
        raise ConfigError(f"config key 'study.pretrain_seeds': {unknown} are not among splits.pretrain_seeds "
                          f"{split_seeds}, so no subset exists for them. Add them to splits.pretrain_seeds (every "
                          "study then shares those subsets), or drop them.")


def _check_individuality(settings: dict) -> None:
    """A signature the simulator can draw, and that persists from run to run when it is asked for."""
    from .models.config import REFERENCE_CHANNELS  # torch-free: the simulated atlases' parcels

    key = "config key 'simulate.individuality"
    if settings["modes"] > REFERENCE_CHANNELS:
        raise ConfigError(f"{key}.modes': {settings['modes']} modes, more than the {REFERENCE_CHANNELS} parcels of the "
                          "demo atlas; each mode is a map over the parcels, so at most that many are independent. "
                          "Lower it (the demo uses 5).")
    if settings["modes"] and settings["share"] > 0 and settings["state_share"] >= 1:
        raise ConfigError(f"{key}.state_share': 1 draws every run's maps anew, so no signature persists from one "
                          "run to the next and identification across runs cannot rise above chance. Lower it below 1 "
                          "(the demo uses 0.25), or set simulate.individuality.share to 0 for no signature.")


def _check_labels(config: dict) -> None:
    phenotypes = config["data"]["phenotypes"]
    for name, label in config["shards"]["labels"].items():
        if label["phenotype"] not in phenotypes:
            raise ConfigError(
                f"config key 'shards.labels.{name}.phenotype': '{label['phenotype']}' is not a configured phenotype "
                f"({', '.join(phenotypes) or 'none'}). Name one of data.phenotypes, or add it there "
                "(pipeline name: column of participants.tsv).")
    stratify = config["splits"]["stratify"]
    if stratify is not None and stratify not in config["shards"]["labels"]:
        raise ConfigError(
            f"config key 'splits.stratify': '{stratify}' is not a shard label ({', '.join(config['shards']['labels'])})."
            " Name one of shards.labels, or set it to null.")


#: Objective-only keys that moved under ``pretrain.options.<objective>``: old place -> new place.
MOVED_KEYS = {f"pretrain.{key}": f"pretrain.options.semantoks.{key}"
              for key in ("mask_probability", "mask_weight", "network_weight", "eps", "views")}
MOVED_KEYS["pretrain.budget.network_decay"] = "pretrain.options.semantoks.network_decay"


def check_moved_keys(config: dict) -> None:
    """A config that still sets a key at its old place gets the new place named."""
    for old, new in MOVED_KEYS.items():
        section, *path = old.split(".")
        value = config.get(section, {})
        for part in path:
            value = value.get(part) if isinstance(value, dict) else None
        if value is not None:
            raise ConfigError(f"config key '{old}' moved to '{new}' (objective-only settings live under "
                              f"pretrain.options.<objective>). Write it there: {new}: {value!r}.")


def _check_objectives(config: dict) -> None:
    """Every run name of ``pretrain.objectives`` names an objective and one of its sizes, every
    ``pretrain.options.<name>`` passes that objective's option schema, and every run's settings its checks."""
    from .objectives import get_spec, run_spec

    pretrain = config["pretrain"]
    if "model" in pretrain:
        raise ConfigError(
            f"config key 'pretrain.model': replaced by pretrain.objectives, a list of objective-size run names. "
            f"Write objectives: [semantoks-{pretrain['model']}] instead.")
    check_moved_keys(config)
    training_schemas = pretrain_schemas()
    for name, options in pretrain["options"].items():
        try:
            spec = get_spec(name)
        except ConfigError as error:
            raise ConfigError(f"config key 'pretrain.options.{name}': {error}") from None
        spec.validate_options(options or {}, training_schemas)
    runs = pretrain["objectives"]
    if len(set(runs)) < len(runs):
        raise ConfigError(f"config key 'pretrain.objectives': {runs} lists a run twice. List each once.")
    for index, run in enumerate(runs):
        try:
            run_spec(pretrain, run)
        except ConfigError as error:
            raise ConfigError(f"config key 'pretrain.objectives.{index}' ({run}): {error}") from None


def _check_pretraining_sizes(config: dict) -> None:
    """With the simulated demo the number of subjects is known before any job: every size must fit the pool."""
    if not config["simulate"]["enabled"] or config["data"]["derivatives"]:
        return
    subjects = config["simulate"]["n_subjects"]
    # an upper bound: the probe split rounds per stratum, so it may hold one subject fewer than the fraction
    pool = subjects - max(math.floor(subjects * config["splits"]["probe_fraction"]) - 1, 0)
    too_large = [size for size in config["splits"]["pretrain_sizes"] if size > pool]
    if too_large:
        raise ConfigError(
            f"config key 'splits.pretrain_sizes': {too_large} exceed the at most {pool} subjects that can be left for pretraining "
            f"({subjects} simulated subjects, splits.probe_fraction {config['splits']['probe_fraction']} held out for "
            "probing; runs that fail QC leave fewer). Lower the sizes, or raise simulate.n_subjects.")


def _check_evaluation_set(config: dict) -> None:
    """With the simulated demo the probe set's size is known before any job: the evaluation set must fit it."""
    if not config["simulate"]["enabled"] or config["data"]["derivatives"]:
        return
    subjects = config["simulate"]["n_subjects"]
    asked = config["pretrain"]["evaluation"]["subjects"]
    probe = math.ceil(subjects * config["splits"]["probe_fraction"])  # before QC: an upper bound
    if asked > probe:
        raise ConfigError(
            f"config key 'pretrain.evaluation.subjects': {asked} evaluation subjects, but the probe set of "
            f"{subjects} simulated subjects holds at most {probe} (splits.probe_fraction "
            f"{config['splits']['probe_fraction']}; the held-out loss is scored on probe subjects, which no "
            "pretraining subset contains). Lower it, or set it to 0 to turn the held-out loss off.")


def _check_probe(config: dict) -> None:
    labels = config["shards"]["labels"]
    for name, task in (config["probe"]["tasks"] or {}).items():
        if task["label"] not in labels:
            raise ConfigError(
                f"config key 'probe.tasks.{name}.label': '{task['label']}' is not a shard label "
                f"({', '.join(labels)}). Name one of them, or add it to shards.labels (the shards are rebuilt).")
    for name in config["probe"]["checkpoints"]:
        if not name.replace("-", "").replace("_", "").isalnum():
            raise ConfigError(f"config key 'probe.checkpoints.{name}': names are letters, digits, '-' and '_' "
                              "(they become folder names). Rename it.")


def _check_preprocess(config: dict) -> None:
    preprocess = config["preprocess"]
    nyquist = 0.5 / preprocess["target_tr"]
    if preprocess["low_pass"] >= nyquist:
        raise ConfigError(
            f"config key 'preprocess.low_pass': {preprocess['low_pass']} Hz is not below the Nyquist frequency "
            f"{nyquist:g} Hz of preprocess.target_tr = {preprocess['target_tr']} s. Lower low_pass or target_tr.")
    if preprocess["high_pass"] >= preprocess["low_pass"]:
        raise ConfigError(
            f"config key 'preprocess.high_pass': {preprocess['high_pass']} Hz must be below preprocess.low_pass "
            f"({preprocess['low_pass']} Hz).")


def resolve_inputs(config: dict) -> dict:
    """Paths of the derivatives, participants table and atlases, defaults filled in.

    With ``simulate.enabled`` every unset path points into the simulated dataset;
    otherwise the derivatives folder and all three atlases must be set.

    A 17-network cortical (or surface) atlas needs the 7-network atlas of the same parcels,
    ``atlases.cortical_7n`` (``atlases.surface_7n``); a cortical file whose name says
    ``17Networks`` without it is an error here, before any job.

    Returns
    -------
    dict
        ``{"derivatives": str, "participants": str, "atlases": {kind: {"image", "labels"}},
        "surface": {"left", "right"} or None}``; ``atlases`` also holds ``cortical_7n``
        (``{"image", "labels"}``, volumetric and XCP-D input) or ``surface_7n`` (``{"left", "right"}``,
        surface input) when set.
    """
    simulate = config["simulate"]
    data = config["data"]
    if simulate["enabled"]:
        from .simulate.layout import demo_atlas_paths  # names only: the parse imports no simulator

        default_derivatives = str(Path(simulate["output_dir"]) / "fmriprep")
        default_atlases = demo_atlas_paths(simulate["output_dir"], simulate["resolution_mm"])
    else:
        default_derivatives, default_atlases = None, {}
    derivatives = data["derivatives"] or default_derivatives
    if derivatives is None:
        raise ConfigError("config key 'data.derivatives' is not set and simulate.enabled is false: "
                          "set it to your fMRIPrep derivatives folder.")
    atlases = {}
    for kind in ("cortical", "subcortical", "cerebellar"):
        entry = {}
        for part in ("image", "labels"):
            value = config["atlases"][kind][part] or default_atlases.get(kind, {}).get(part)
            if value is None and kind == "cortical" and data["input"] == "surface":
                entry[part] = None  # the surface atlas gives the cortex
                continue
            if value is None:
                raise ConfigError(f"config key 'atlases.{kind}.{part}' is not set and simulate.enabled is false: "
                                  "set it to the atlas file (NIfTI image, TSV label table with index and name).")
            entry[part] = str(value)
        atlases[kind] = entry
    participants = data["participants"] or str(Path(derivatives) / "participants.tsv")
    surface = None
    if data["input"] == "surface":
        surface = config["atlases"]["surface"]
        if not (surface["left"] and surface["right"]):
            raise ConfigError("config key 'atlases.surface': data.input is surface, so set atlases.surface.left and "
                              ".right to the Schaefer atlas of each hemisphere (.annot or .label.gii).")
        surface = dict(surface)
    _resolve_seven_network_atlas(config, atlases, surface)
    if data["input"] == "xcpd" and not data["xcpd_segmentations"]:
        raise ConfigError("config key 'data.xcpd_segmentations': data.input is xcpd, so list the seg- labels of "
                          "the XCP-D tables to read (e.g. [4S456Parcels]).")
    return {"derivatives": str(derivatives), "participants": participants, "atlases": atlases, "surface": surface}


def _resolve_seven_network_atlas(config: dict, atlases: dict, surface: dict | None) -> None:
    """Add the 7-network companion of the cortical atlas to ``atlases`` when it is set.

    The cortical atlas in use is ``surface`` for surface input, else ``atlases["cortical"]``; only its
    companion (``surface_7n`` or ``cortical_7n``) is read. A cortical file named ``*17Networks*``
    without a companion is refused: the 17-network names do not give the 7-network assignment.
    """
    if surface is not None:
        key, parts, cortex = "surface_7n", ("left", "right"), surface
    else:
        key, parts, cortex = "cortical_7n", ("image", "labels"), atlases["cortical"]
    companion = config["atlases"].get(key) or {}
    given = [part for part in parts if companion.get(part)]
    if given and len(given) < len(parts):
        missing = next(part for part in parts if part not in given)
        raise ConfigError(f"config key 'atlases.{key}.{missing}' is not set but atlases.{key}.{given[0]} is: set both "
                          f"({' and '.join(parts)}) to the Schaefer 7-network atlas, or neither.")
    if given:
        atlases[key] = {part: str(companion[part]) for part in parts}
        return
    seventeen = [str(path) for path in cortex.values() if path and "17Networks" in Path(path).name]
    if seventeen:
        cortical = "atlases.surface" if surface is not None else "atlases.cortical"
        raise ConfigError(
            f"config key 'atlases.{key}': {cortical} is a Schaefer 17-network atlas ({seventeen[0]}), and its network "
            "names do not give the 7-network assignment of its parcels (a 17Networks_LH_DorsAttnB parcel can lie in "
            f"the 7-network SomMot). Set atlases.{key}.{parts[0]} and .{parts[1]} to the Schaefer 7-network atlas of "
            "the same resolution (e.g. 400Parcels7Networks); its parcels are matched to the 17-network ones.")


def load_config(path: str | Path) -> dict:
    """Read a YAML configuration file and validate it (see :func:`validate_config`)."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"Configuration file {path} does not exist. Pass the path of a YAML file.")
    with path.open() as handle:
        try:
            raw = yaml.safe_load(handle)
        except yaml.YAMLError as exc:
            raise ConfigError(f"Configuration file {path} is not valid YAML: {exc}") from exc
    if raw is not None and not isinstance(raw, dict):
        raise ConfigError(f"Configuration file {path} must hold a mapping of keys, not {type(raw).__name__}.")
    try:
        return validate_config(raw)
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from None
