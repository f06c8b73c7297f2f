"""The config contract: defaults filled, mistakes rejected with the key named."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from brainscale.config import ConfigError, load_config, validate_config

REPO = Path(__file__).resolve().parents[1]


def test_demo_config_is_valid_and_defaults_are_filled():
    config = load_config(REPO / "config" / "config.yaml")
    simulate = config["simulate"]
    assert simulate["n_subjects"] == 230
    assert config["splits"]["pretrain_sizes"] == [8, 20, 50, 128] and config["splits"]["pretrain_seeds"] == [0, 1]
    assert config["pretrain"]["objectives"] == ["semantoks-tiny", "netbert-tiny"]
    assert config["study"] == {"name": "demo", "pretrain_seeds": None, "bootstrap": 1000, "seed": 0}  # defaults
    assert config["probe"]["split_seeds"] == list(range(10))  # a default, not in the file
    assert simulate["bold_dtype"] == "int16"  # a default, not in the file
    assert [site["repetition_time"] for site in simulate["sites"]] == [2.0, 0.8, 1.5]
    assert simulate["sites"][0]["dummy_scans"] == 0


def test_a_study_named_like_a_shared_folder_is_refused():
    with pytest.raises(ConfigError, match="study.name.*shares.*pretrain"):
        validate_config({"study": {"name": "pretrain"}})
    with pytest.raises(ConfigError, match="study"):
        validate_config({"study": {"name": "../elsewhere"}})
    with pytest.raises(ConfigError, match=r"study.pretrain_seeds.*\[2\] are not among splits.pretrain_seeds"):
        validate_config({"study": {"pretrain_seeds": [0, 2]}, "splits": {"pretrain_seeds": [0, 1]}})


def test_empty_config_gets_every_default():
    config = validate_config(None)
    assert config["simulate"]["enabled"] is True
    assert config["simulate"]["seed"] == 21


@pytest.mark.parametrize(
    "raw, key, words",
    [
        ({"simulate": {"n_subject": 10}}, "simulate", "'n_subject' was unexpected"),
        ({"simulatee": {}}, "<top level>", "'simulatee' was unexpected"),
        ({"simulate": {"n_subjects": "many"}}, "simulate.n_subjects", "is not of type 'integer'"),
        ({"simulate": {"n_subjects": -5}}, "simulate.n_subjects", "less than the minimum"),
        ({"simulate": {"sites": [{"name": "a", "repetition_time": 0, "n_volumes": [100, 120]}]}},
         "simulate.sites.0.repetition_time", "less than or equal to the minimum"),
        ({"simulate": {"sites": [{"name": "a", "repetition_time": -2.0, "n_volumes": [100, 120]}]}},
         "simulate.sites.0.repetition_time", "less than or equal to the minimum"),
        ({"simulate": {"resolution_mm": 1}}, "simulate.resolution_mm", "less than the minimum"),
        ({"simulate": {"bold_dtype": "uint8"}}, "simulate.bold_dtype", "is not one of"),
    ],
)
def test_schema_errors_name_the_key(raw, key, words):
    with pytest.raises(ConfigError) as error:
        validate_config(raw)
    message = str(error.value)
    assert f"config key '{key}'" in message
    assert words in message


def test_rules_beyond_the_schema():
    with pytest.raises(ConfigError, match=r"simulate.sites.0.n_volumes.*min <= max"):
        validate_config({"simulate": {"sites": [{"name": "a", "repetition_time": 2.0, "n_volumes": [300, 100]}]}})
    duplicated = {"name": "a", "repetition_time": 2.0, "n_volumes": [100, 120]}
    with pytest.raises(ConfigError, match="unique"):
        validate_config({"simulate": {"sites": [duplicated, dict(duplicated)]}})


def test_load_config_names_the_file(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("simulate:\n  seed: -1\n")
    with pytest.raises(ConfigError, match=str(path)):
        load_config(path)


@pytest.mark.parametrize(
    "raw, expected",
    [
        ({"simulate": {"n_subjects": -3}}, "n_subjects"),
        ({"simulate": {"typo_key": 1}}, "typo_key"),
        ({"simulate": {"sites": [{"name": "a", "repetition_time": 0.0, "n_volumes": [100, 120]}]}},
         "repetition_time"),
    ],
)
def test_snakemake_rejects_bad_config_before_any_job(tmp_path, raw, expected):
    configfile = tmp_path / "bad.yaml"
    configfile.write_text(yaml.safe_dump(raw))
    result = subprocess.run(
        [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "--cores", "1",
         "--configfile", str(configfile)],
        cwd=tmp_path, capture_output=True, text=True, timeout=300,
    )
    assert result.returncode != 0
    assert expected in result.stdout + result.stderr
    assert not (tmp_path / "resources").exists()  # no job ran


@pytest.mark.parametrize("raw, words", [
    ({"shards": {"labels": {"height_cm": {"phenotype": "height"}}}, "splits": {"stratify": None}},
     r"shards.labels.height_cm.phenotype': 'height' is not a configured phenotype"),
    ({"splits": {"stratify": "site"}}, r"splits.stratify': 'site' is not a shard label"),
    ({"splits": {"pretrain_sizes": [8, 100]}}, r"\[100\] exceed the at most 79 subjects .*raise simulate.n_subjects"),
])
def test_labels_strata_and_sizes_that_cannot_exist_fail_before_any_job(raw, words):
    with pytest.raises(ConfigError, match=words):
        validate_config(raw)


def test_a_bad_label_stops_the_workflow_at_parse_time(tmp_path):
    """The labels-vs-phenotypes mistake used to fail in build_shards, after all preprocessing."""
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({"shards": {"labels": {"height_cm": {"phenotype": "height"}}},
                                   "splits": {"stratify": None}}))
    result = subprocess.run([sys.executable, "-m", "snakemake", "-n", "--cores", "1", "--configfile", str(bad)],
                            cwd=REPO, capture_output=True, text=True)
    assert result.returncode != 0
    assert "'height' is not a configured phenotype" in result.stdout + result.stderr


def test_a_failing_job_writes_its_error_and_traceback_to_the_rule_log(tmp_path):
    log = tmp_path / "rule.log"
    script = ("from brainscale.rulelog import rule_log\n"
              f"log = rule_log({str(log)!r})\nlog('started')\n"
              "raise ValueError('results/qc/runs.tsv: every run is excluded')\n")
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert result.returncode == 1 and "every run is excluded" in result.stderr  # still on the job's stderr
    text = log.read_text()
    assert "started" in text and "the job failed: results/qc/runs.tsv: every run is excluded" in text
    assert "Traceback (most recent call last)" in text and "ValueError" in text


@pytest.mark.parametrize("raw, words", [
    ({"pretrain": {"objectives": ["nosuch-tiny"]}}, r"pretrain.objectives.0' \(nosuch-tiny\): unknown objective "
                                                    r"'nosuch': the objectives are \[.*semantoks"),
    ({"pretrain": {"objectives": ["semantoks-huge"]}}, r"semantoks has no size 'huge'; its sizes are"),
    ({"pretrain": {"objectives": ["semantoks-tiny", "semantoks-tiny"]}}, "lists a run twice"),
    ({"pretrain": {"model": "small"}}, r"pretrain.model': replaced by pretrain.objectives.*\[semantoks-small\]"),
    ({"pretrain": {"options": {"nosuch": {}}}}, r"pretrain.options.nosuch': unknown objective"),
    ({"pretrain": {"options": {"semantoks": {"colour": 1}}}},
     r"pretrain.options.semantoks': .*Additional properties are not allowed \('colour' was unexpected\)"),
    ({"pretrain": {"options": {"semantoks": {"mask_probability": 2}}}},
     r"pretrain.options.semantoks.mask_probability': 2 is greater than the maximum of 1"),
    ({"pretrain": {"options": {"semantoks": {"views": {"mode": "far"}}}}}, r"semantoks.views.mode': 'far' is not one of"),
    ({"pretrain": {"options": {"semantoks": {"architecture": {"colour": 1}}}}}, r"semantoks.architecture': .*'colour'"),
    ({"pretrain": {"options": {"mae": {"architecture": {"decoder_depth": "two"}}}}},
     r"mae.architecture.decoder_depth': 'two' is not of type 'integer'"),
    ({"pretrain": {"architecture": {"patch_length": 30}}}, "does not divide crop_length"),
    ({"pretrain": {"options": {"semantoks": {"architecture": {"head_hidden": 7, "width": 60}}}}},
     r"semantoks-tiny: width \(60\) must be even and a multiple of head_dim"),
])
def test_objective_settings_that_cannot_train_fail_at_config_time(raw, words):
    with pytest.raises(ConfigError, match=words):
        validate_config(raw)


@pytest.mark.parametrize("raw, old, new", [
    ({"pretrain": {"mask_probability": 0.2}}, "pretrain.mask_probability", "pretrain.options.semantoks.mask_probability"),
    ({"pretrain": {"views": {"mode": "independent"}}}, "pretrain.views", "pretrain.options.semantoks.views"),
    ({"pretrain": {"budget": {"network_decay": 960}}}, "pretrain.budget.network_decay",
     "pretrain.options.semantoks.network_decay"),
])
def test_a_key_that_moved_under_its_objective_names_the_new_place(raw, old, new):
    with pytest.raises(ConfigError, match=rf"'{old}' moved to '{new}'.*Write it there"):
        validate_config(raw)


def test_per_objective_architecture_overrides_reach_every_preset_key():
    from brainscale.objectives import run_spec

    pretrain = validate_config({"pretrain": {"architecture": {"depth": 3},
                                             "options": {"semantoks": {"architecture": {"head_hidden": 64}}}}})["pretrain"]
    run = run_spec(pretrain)
    assert (run.architecture["depth"], run.architecture["head_hidden"], run.architecture["width"]) == (3, 64, 64)


def test_a_run_specification_is_frozen_round_trips_and_a_foreign_file_is_refused(tmp_path):
    from brainscale.objectives import RunSpec, run_spec

    run = run_spec(validate_config({})["pretrain"])
    assert RunSpec.read(run.write(tmp_path / "run.yaml")) == run
    with pytest.raises(TypeError):
        run.options["views"]["mode"] = "independent"
    (tmp_path / "other.yaml").write_text("pretrain: {}\n")
    with pytest.raises(ConfigError, match="other.yaml is not a brainscale run specification"):
        RunSpec.read(tmp_path / "other.yaml")
    # a hand-edited file is checked again by its objective
    edited = (tmp_path / "run.yaml").read_text().replace("mask_probability: 0.5", "mask_probability: 5")
    (tmp_path / "edited.yaml").write_text(edited)
    with pytest.raises(ConfigError, match=r"mask_probability': 5 is greater than the maximum of 1"):
        RunSpec.read(tmp_path / "edited.yaml")


@pytest.mark.parametrize("files", [
    ["config/comparison.yaml"],
    ["config/gpu-study.yaml"],
    ["config/gpu-study.yaml", "benchmarks/device/smoke.yaml"],  # the device session's CPU smoke test
], ids=lambda files: "+".join(Path(name).stem for name in files))
def test_every_shipped_config_passes_the_workflow_checks(files):
    # as Snakemake reads them: each --configfile merged over the Snakefile's config/config.yaml
    from snakemake.utils import update_config

    from brainscale.objectives import run_spec

    config = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    for name in files:
        update_config(config, yaml.safe_load((REPO / name).read_text()))
    config = validate_config(config)
    assert [run_spec(config["pretrain"], run).run for run in config["pretrain"]["objectives"]] == \
        config["pretrain"]["objectives"]
