"""The Snakemake workflow end to end on the minimal config, and the CLI."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd

from brainscale.cli import main

from .conftest import SNAKEMAKE_ENV

REPO = Path(__file__).resolve().parents[1]
MINIMAL = REPO / "tests" / "configs" / "minimal.yaml"


def snakemake(*args, cwd):
    return subprocess.run([sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), *args],
                          cwd=cwd, capture_output=True, text=True, timeout=900, env=SNAKEMAKE_ENV)


def test_workflow_runs_every_stage_on_the_minimal_config(tmp_path):
    result = snakemake("--cores", "2", "--configfile", str(MINIMAL), cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    dataset = tmp_path / "resources" / "synthetic"
    runs = pd.read_csv(dataset / "ground_truth" / "runs.tsv", sep="\t")
    for relative in runs["bold"]:
        assert (dataset / "fmriprep" / relative).is_file()
    assert (tmp_path / "logs" / "simulate" / "simulate_derivatives.log").read_text().strip()
    # Preprocessing: every run has a QC row; included runs have their matrix; the bad ones are out.
    qc = pd.read_csv(tmp_path / "results" / "qc" / "runs.tsv", sep="\t")
    assert len(qc) == len(runs)
    assert (tmp_path / "results" / "qc" / "runs.png").stat().st_size > 10_000
    matrices = sorted((tmp_path / "results" / "preprocess").glob("batch-*/*_desc-clean_timeseries.npz"))
    assert len(matrices) == int(qc["included"].sum()) > 0
    bad = runs["high_motion"] | runs["short"]
    assert not qc.set_index("run_id").loc[[Path(b).name.split("_space-")[0] for b in runs.loc[bad, "bold"]],
                                          "included"].any()
    mapping = np.load(tmp_path / "results" / "preprocess" / "network_mapping.npz")
    assert mapping["network_map_schaefer400_7n"].shape == (400,)
    phenotypes = pd.read_csv(tmp_path / "results" / "preprocess" / "phenotypes.tsv", sep="\t")
    assert list(phenotypes.columns) == ["participant_id", "sex", "age", "fluid_intelligence"]
    # Shards and splits.
    manifest = json.loads((tmp_path / "results" / "shards" / "manifest.json").read_text())
    assert manifest["n_runs"] == len(matrices)
    assert main(["verify", str(tmp_path / "results" / "shards")]) == 0
    splits = pd.read_csv(tmp_path / "results" / "splits" / "summary.tsv", sep="\t", index_col="split")["subjects"]
    assert splits["probe_test"] > 0 and splits["pretrain_pool"] >= 3
    # Pretraining: one encoder per subset size, loadable without the training code.
    from brainscale.export import load_encoder
    from brainscale.objectives import RunSpec

    for size in (2, 3):
        folder = tmp_path / "results" / "pretrain" / "semantoks-tiny" / f"n-{size}_seed-0"
        assert load_encoder(folder / "encoder.pt").config.width == 64
        # the run specification the job trained with, written beside the run
        assert RunSpec.read(folder / "run.yaml").options["network_decay"] == 1
        log = pd.read_csv(folder / "log.csv")  # the same budget (3 steps) at every size
        assert list(log["step"]) == [0, 1, 2] and log["samples_seen"].iloc[-1] == 6
    # Probes, baselines, tables and figures.
    for source in ("pretrain/semantoks-tiny/n-2_seed-0", "pretrain/semantoks-tiny/n-3_seed-0",
                   "random/semantoks-tiny_seed-21", "baseline/connectivity", "baseline/oracle"):
        metrics = pd.read_csv(tmp_path / "results" / "demo" / "probes" / source / "metrics.tsv", sep="\t")
        # the configured task, cross-run re-identification (pool-wide, split seed -1), and for the demo the
        # simulator's latent traits (not for the oracle, whose features they are)
        latent = set() if source == "baseline/oracle" else {f"latent_{name}" for name in
                                                              ("sex", "age", "cognition", "nuisance")}
        assert set(metrics["task"]) == {"age", "subject_reid"} | latent, source
        assert set(metrics["split_seed"]) == {0, 1, -1}, source
    # The study's outputs under results/<study.name>/ (the demo config's "demo").
    study = tmp_path / "results" / "demo"
    for name in ("scaling.png", "scaling.pdf", "layerwise.png", "layerwise.pdf", "objectives.png", "objectives.pdf",
                 "learning_curves.png", "loss_scaling.png", "loss_scaling.pdf"):
        assert (study / "figures" / name).stat().st_size > 5000
    assert not (tmp_path / "results" / "tables").exists() and not (tmp_path / "results" / "figures").exists()
    scaling = pd.read_csv(study / "tables" / "scaling.tsv", sep="\t")
    # Two sizes cannot fix E + A*D^-alpha (and scores on one test subject are undefined): each fit is a row
    # with its reason, not a crash.
    for name in ("loss_scaling", "probe_scaling"):
        fits = pd.read_csv(study / "tables" / f"{name}.tsv", sep="\t")
        assert len(fits) and not fits["identifiable"].any(), name
        assert fits["reason"].str.match(r"2 pretraining size\(s\)|no finite value").all(), fits["reason"]
    assert pd.read_csv(study / "tables" / "loss_scaling.tsv", sep="\t")["reason"].str.startswith("2 pretraining").all()
    points = pd.read_csv(study / "tables" / "loss_points.tsv", sep="\t")
    assert len(points) == 4 and points["val_loss"].notna().all() and (points["hours"] > 0).all()
    assert set(scaling["family"]) == {"pretrained", "random", "connectivity", "oracle"}
    assert {"steps", "samples_seen", "passes"} <= set(scaling.columns)
    assert scaling.loc[scaling["family"] == "pretrained", "steps"].notna().all()
    assert "fingerprint identification across runs" in (tmp_path / "logs" / "demo" / "probe" / "baseline" /
                                                        "connectivity.log").read_text()
    assert "cache miss" in (tmp_path / "logs" / "embed" / "pretrain" / "semantoks-tiny" / "n-2_seed-0.log").read_text()
    # Nothing left to do on a second invocation.
    again = snakemake("--cores", "2", "--configfile", str(MINIMAL), "-n", cwd=tmp_path)
    assert again.returncode == 0
    assert "Nothing to be done" in again.stdout + again.stderr
    # A second study beside the first: one of its runs, its own folder; it reuses the shared stages (no
    # splits, training or embedding again) and leaves the first study's tables alone.
    other = tmp_path / "other.yaml"
    other.write_text("study: {name: other, pretrain_seeds: [0]}\npretrain: {objectives: [semantoks-tiny]}\n")
    jobs = dry_run_jobs(tmp_path, "all", other)
    assert not {"make_splits", "pretrain", "embed", "random_init"} & set(jobs), jobs
    assert {"probe", "scaling_figure", "loss_scaling", "learning_curves"} <= set(jobs), jobs
    # A new checkpoint in place of a trained one, and one dropped in from elsewhere: probe_all embeds
    # and probes those two and redraws the figure; nothing is retrained or preprocessed again.
    from brainscale.config import validate_config
    from brainscale.objectives import run_spec
    from brainscale.objectives.base import PretrainingData
    from brainscale.probing.checkpoints import write_random_encoder

    data = PretrainingData(tmp_path / "results" / "shards", (), 0)
    tiny = run_spec(validate_config({})["pretrain"], "semantoks-tiny")
    write_random_encoder(tiny, data, 5, tmp_path / "results" / "pretrain" / "semantoks-tiny" / "n-2_seed-0" / "encoder.pt")
    write_random_encoder(tiny, data, 6, tmp_path / "results" / "pretrain" / "semantoks-tiny" / "n-7_seed-4" / "encoder.pt")
    jobs = dry_run_jobs(tmp_path, "probe_all")
    assert sorted(jobs) == ["embed", "embed", "probe", "probe", "probe_all", "scaling_figure"], jobs
    # An external checkpoint listed in a config file joins them.
    write_random_encoder(tiny, data, 7, tmp_path / "elsewhere.pt")
    extra = tmp_path / "checkpoints.yaml"
    extra.write_text(f"probe:\n  checkpoints:\n    mine: {{path: {tmp_path / 'elsewhere.pt'}}}\n")
    jobs = dry_run_jobs(tmp_path, "probe_all", extra)
    assert sorted(jobs) == ["embed"] * 3 + ["probe"] * 3 + ["probe_all", "scaling_figure"], jobs
    # A Brainmarks model as an external checkpoint: embedded through Brainmarks (no file to read) and probed.
    brainmarks = tmp_path / "brainmarks.yaml"
    brainmarks.write_text("probe:\n  checkpoints:\n    fc400: {format: brainmarks, model: connectome_schaefer400}\n")
    result = snakemake("results/demo/tables/scaling.tsv", "--cores", "2", "--configfile", str(MINIMAL),
                       str(brainmarks), cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = pd.read_csv(study / "probes" / "external" / "fc400" / "metrics.tsv", sep="\t")
    assert {"age", "subject_reid"} <= set(metrics["task"]) and set(metrics["feature"]) == {"cls"}
    scaling = pd.read_csv(study / "tables" / "scaling.tsv", sep="\t")  # a line of the scaling figure
    assert set(scaling.loc[scaling["family"] == "external", "name"]) == {"fc400"}
    # The export and the agreement check are wired to the probes (the minimal probe set is too small to split
    # by sex: tests/test_brainmarks.py runs them on 36 subjects).
    jobs = dry_run_jobs(tmp_path, "brainmarks_agreement", brainmarks)
    assert sorted(jobs) == ["brainmarks_agreement", "brainmarks_export"], jobs


def dry_run_jobs(workdir: Path, target: str, *configfiles: Path) -> list[str]:
    """The rules of the jobs a run of ``target`` would execute, from a dry run through the Snakemake API."""
    from snakemake.api import SnakemakeApi
    from snakemake.settings.types import (ConfigSettings, DAGSettings, OutputSettings, Quietness, ResourceSettings,
                                          StorageSettings)

    with SnakemakeApi(OutputSettings(quiet={Quietness.ALL})) as api:
        workflow = api.workflow(resource_settings=ResourceSettings(cores=1), snakefile=REPO / "Snakefile",
                                workdir=workdir, storage_settings=StorageSettings(),
                                config_settings=ConfigSettings(configfiles=[MINIMAL, *configfiles]))
        dag = workflow.dag(dag_settings=DAGSettings(targets={target}))
        dag.execute_workflow(executor="dryrun")
        # the DAG of the dry run is not public API; needrun_jobs is what `snakemake -n` lists
        return [job.rule.name for job in workflow._workflow.dag.needrun_jobs(exclude_finished=False)]


def test_lint_is_clean():
    result = snakemake("--lint", cwd=REPO)
    assert result.returncode == 0, result.stdout + result.stderr


def test_cli_simulate(tmp_path, capsys):
    output = tmp_path / "cli"
    assert main(["simulate", "--config", str(MINIMAL), "--output", str(output), "--n-subjects", "6"]) == 0
    assert (output / "fmriprep" / "participants.tsv").is_file()
    assert len(pd.read_csv(output / "fmriprep" / "participants.tsv", sep="\t")) == 6
    # A second call refuses to overwrite and says how to proceed.
    assert main(["simulate", "--config", str(MINIMAL), "--output", str(output)]) == 2
    assert "already exists" in capsys.readouterr().err
    bad = tmp_path / "bad.yaml"
    bad.write_text("simulate:\n  n_subjects: -1\n")
    assert main(["simulate", "--config", str(bad), "--output", str(tmp_path / "x")]) == 2
    assert "simulate.n_subjects" in capsys.readouterr().err


def test_slurm_profile_sizes_the_jobs(tmp_path):
    """The cluster profile parses, and gives training a GPU and CPU stages none (dry run, no Slurm needed)."""
    result = snakemake("--profile", str(REPO / "slurm"), "-n", "--configfile", str(MINIMAL), cwd=tmp_path)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    blocks = {block.split(":", 1)[0]: block for block in result.stdout.split("\nrule ")[1:]}
    assert "gpu=1" in blocks["pretrain"] and "cpus_per_task=8" in blocks["pretrain"]
    assert "runtime=120" in blocks["pretrain"]  # attempt 1 of 120 min x attempt
    cpu_only = snakemake("--profile", str(REPO / "slurm"), "-n", "--configfile", str(MINIMAL),
                         "--config", "pretrain={device: cpu}", cwd=tmp_path)
    assert "gpu=0" in cpu_only.stdout.split("\nrule pretrain:", 1)[1].split("\nrule ", 1)[0]
