"""QC never breaks the workflow: no exclusion, some, or all (which stops before shards with the reasons)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from brainscale.config import validate_config
from brainscale.plotting.qc import plot_run_qc
from brainscale.preprocessing.batch import preprocess_batch
from brainscale.preprocessing.discovery import find_runs
from brainscale.preprocessing.pipeline import (QC_COLUMNS, AllRunsExcludedError, exclusion_counts, included_mask,
                                               require_included_runs)
from brainscale.simulate.dataset import SPACE, demo_atlas_paths

REPO = Path(__file__).resolve().parents[1]
CONFIG = validate_config({})
THRESHOLDS = CONFIG["preprocess"]["qc"]


def _row(run_id: str, exclusion: str = "", reason: str = "", measured: bool = True) -> dict:
    row = dict.fromkeys(QC_COLUMNS, np.nan)
    row.update(run_id=run_id, participant_id=run_id.split("_")[0], session="n/a", source=f"{run_id}.nii.gz",
               included=not exclusion, exclusion=exclusion, reason=reason, note="")
    if measured:
        row.update(mean_fd=0.1, n_volumes_out=150, fraction_high_motion=0.0, fraction_scrubbed=0.0)
    return row


def _written_and_read(rows: list[dict], path: Path) -> pd.DataFrame:
    """The table as the workflow has it: written by a batch, read back by qc_report (empty cells are NaN)."""
    pd.DataFrame(rows, columns=QC_COLUMNS).to_csv(path, sep="\t", index=False, na_rep="n/a", float_format="%.6g")
    return pd.read_csv(path, sep="\t", na_values=["n/a"])


ALL_EXCLUDED = [_row("sub-01_task-rest", "too_short", "60 volumes at TR 2.0 s, shorter than one 100-TR crop"),
                _row("sub-02_task-rest", "high_mean_fd,too_short", "mean FD 0.51 mm > 0.3; 80 volumes"),
                _row("sub-03_task-rest", "input_error", "sub-03_task-rest_desc-confounds_timeseries.tsv: 10 rows",
                     measured=False)]


@pytest.mark.parametrize("rows, n_included, counts", [
    ([_row("sub-01_task-rest")], 1, {}),  # one clean run
    ([_row(f"sub-{i:02d}_task-rest") for i in range(5)], 5, {}),  # a clean cohort
    ([_row("sub-01_task-rest"), *ALL_EXCLUDED[:2]], 1, {"too_short": 2, "high_mean_fd": 1}),
    (ALL_EXCLUDED, 0, {"too_short": 2, "high_mean_fd": 1, "input_error": 1}),
    ([_row("sub-03_task-rest", "input_error", "bad", measured=False)], 0, {"input_error": 1}),  # nothing measured
])
def test_the_qc_figure_and_counts_work_for_any_number_of_exclusions(tmp_path, rows, n_included, counts):
    table = _written_and_read(rows, tmp_path / "qc.tsv")
    plot_run_qc(table, THRESHOLDS, tmp_path / "runs.png")
    assert (tmp_path / "runs.png").stat().st_size > 0
    assert int(included_mask(table).sum()) == n_included
    assert exclusion_counts(table).to_dict() == counts
    assert list(exclusion_counts(table)) == sorted(counts.values(), reverse=True)


def test_included_is_read_whether_bool_or_text():
    table = pd.DataFrame({"included": ["True", "False", "true", "0"]})
    assert included_mask(table).tolist() == [True, False, True, False]


def test_all_excluded_stops_with_the_reasons_and_their_counts(tmp_path):
    table = _written_and_read(ALL_EXCLUDED, tmp_path / "qc.tsv")
    with pytest.raises(AllRunsExcludedError) as error:
        require_included_runs(table)
    message = str(error.value)
    assert "All 3 runs were excluded" in message and "results/qc/runs.tsv" in message
    assert "too_short: 2 runs" in message and "high_mean_fd: 1 run " in message and "input_error: 1 run " in message
    assert "sub-01_task-rest: 60 volumes" in message and "10 rows" in message  # an example of each reason
    assert message.index("too_short") < message.index("high_mean_fd")  # most frequent first
    require_included_runs(_written_and_read([_row("sub-04_task-rest"), *ALL_EXCLUDED], tmp_path / "qc.tsv"))
    with pytest.raises(AllRunsExcludedError, match="No run reached QC"):
        require_included_runs(pd.DataFrame(columns=QC_COLUMNS))


# --- the workflow's adapters, as Snakemake runs them ---------------------------------------------

_DRIVER = """
import runpy, sys, json
class Named(list):
    def __init__(self, items=(), **named):
        super().__init__(list(items) + list(named.values()))
        self.__dict__.update(named)
spec = json.loads(sys.argv[2])
snakemake = type("Snakemake", (), {})()
snakemake.input = Named(spec["input"]) if isinstance(spec["input"], list) else Named(**spec["input"])
snakemake.output = Named(**spec["output"]) if isinstance(spec["output"], dict) else Named(spec["output"])
snakemake.params = Named(**spec["params"])
snakemake.log = Named([spec["log"]])
runpy.run_path(sys.argv[1], init_globals={"snakemake": snakemake}, run_name="__main__")
"""


def _run_script(name: str, spec: dict, cwd: Path) -> subprocess.CompletedProcess:
    for path in [spec["log"], *(spec["output"].values() if isinstance(spec["output"], dict) else spec["output"])]:
        (cwd / path).parent.mkdir(parents=True, exist_ok=True)  # as Snakemake does
    return subprocess.run([sys.executable, "-c", _DRIVER, str(REPO / "workflow" / "scripts" / name), json.dumps(spec)],
                          cwd=cwd, capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def all_excluded_batches(tiny_dataset, tmp_path_factory):
    """Real batches of the tiny dataset in which QC excludes every run (crops longer than any run)."""
    folder = tmp_path_factory.mktemp("all_excluded")
    runs = find_runs(tiny_dataset / "fmriprep", space=SPACE, task="rest")[:4]
    settings = dict(CONFIG["preprocess"], crop_length=10_000)
    batches = []
    for index, start in enumerate(range(0, len(runs), 2)):
        batch = folder / "results" / "preprocess" / f"batch-{index:05d}"
        preprocess_batch(runs[start:start + 2], demo_atlas_paths(tiny_dataset, 6), settings, batch, space=SPACE,
                         log=lambda line: None)
        batches.append(str(batch))
    return folder, batches


def test_qc_report_and_build_shards_when_every_run_is_excluded(all_excluded_batches):
    folder, batches = all_excluded_batches
    report = _run_script("qc_report.py", {
        "input": batches, "output": {"table": "results/qc/runs.tsv", "figure": "results/qc/runs.png"},
        "params": {"thresholds": THRESHOLDS}, "log": "logs/qc_report.log"}, folder)
    assert report.returncode == 0, report.stderr  # the QC report itself never breaks
    table = pd.read_csv(folder / "results/qc/runs.tsv", sep="\t", na_values=["n/a"])
    assert len(table) == 4 and not included_mask(table).any()
    assert (folder / "results/qc/runs.png").stat().st_size > 0
    assert "All 4 runs were excluded" in (folder / "logs/qc_report.log").read_text()

    (folder / "phenotypes.tsv").write_text("participant_id\tsex\n")
    shards = _run_script("build_shards.py", {
        "input": {"batches": batches, "phenotypes": "phenotypes.tsv", "network_mapping": "network_mapping.npz"},
        "output": ["results/shards"], "params": {"settings": CONFIG["shards"], "config": {}},
        "log": "logs/build_shards.log"}, folder)
    assert shards.returncode != 0 and "AllRunsExcludedError" in shards.stderr
    log = (folder / "logs/build_shards.log").read_text()
    assert "All 4 runs were excluded" in log and "too_short: 4 runs" in log and "results/qc/runs.tsv" in log
    assert not (folder / "results" / "shards").exists()


def test_qc_report_when_no_run_is_excluded(tmp_path):
    batch = tmp_path / "results" / "preprocess" / "batch-00000"
    batch.mkdir(parents=True)
    _written_and_read([_row("sub-01_task-rest"), _row("sub-02_task-rest")], batch / "qc.tsv")
    report = _run_script("qc_report.py", {
        "input": [str(batch)], "output": {"table": "results/qc/runs.tsv", "figure": "results/qc/runs.png"},
        "params": {"thresholds": THRESHOLDS}, "log": "logs/qc_report.log"}, tmp_path)
    assert report.returncode == 0, report.stderr
    assert "2 runs, 2 included; exclusions: none" in (tmp_path / "logs/qc_report.log").read_text()
    assert (tmp_path / "results/qc/runs.png").stat().st_size > 0
