"""Faults lose nothing: a stage killed with SIGKILL at the worst moment leaves no partial file that a rerun
reads, and the rerun writes what an uninterrupted run writes.

Each stage runs in a child process (``python -c``) with a hook that kills it at a chosen point, so the
tests are deterministic rather than timing-based: inside ``brainscale.io.atomic_file`` just before the
rename, with the temporary file cut to half its size (a partly written file); while an HDF5 shard is
being filled; or in ``atomic_directory`` between moving the old output aside and moving the new one in.

Byte-determinism, checked by these tests: ``qc.tsv``, the HDF5 shards, the manifest and the feature
files are byte-identical across runs and are compared by hash. ``.npz`` matrices carry zip timestamps
and ``torch.save`` writes a random ``serialization_id``, so those are compared by content.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import pytest
import torch
import yaml

from brainscale.objectives.base import PretrainingData
from brainscale.config import validate_config
from brainscale.objectives import run_spec
from brainscale.preprocessing.batch import preprocess_batch
from brainscale.preprocessing.discovery import find_runs
from brainscale.probing.checkpoints import write_random_encoder
from brainscale.probing.embeddings import embed_checkpoint, read_features
from brainscale.shards.writer import write_shards
from brainscale.simulate.dataset import SPACE, demo_atlas_paths
from brainscale.training.logbook import log_columns
from brainscale.training.loop import pretrain

from .conftest import CONFIG, MINIMAL_CONFIG, SNAKEMAKE_ENV

REPO = Path(__file__).resolve().parents[1]
PARTIAL = ".partial-"
BUDGET = {"unit": "steps", "total": 6, "warmup": 1, "checkpoint_every": 2}
TIMING_COLUMNS = ("samples_per_s", "data_wait")  # the log's only columns that differ between equal runs
TIMING_INDICES = [log_columns(("cls", "network", "mask")).index(name) for name in TIMING_COLUMNS]

# Prepended to every child: kill hooks, and the child's arguments as ARGS.
HOOKS = '''
import json, os, pathlib, signal, sys
ARGS = json.loads(sys.argv[1])

def _die():
    os.kill(os.getpid(), signal.SIGKILL)

def kill_at_replace(nth, name="", cut=True):
    """Die at the nth os.replace (of a destination containing name), its source cut to half its size."""
    real, seen = os.replace, [0]
    def replace(source, destination, *args, **kwargs):
        if name in str(destination):
            seen[0] += 1
            if seen[0] == nth:
                if cut:
                    with open(source, "r+b") as handle:
                        handle.truncate(os.path.getsize(source) // 2)
                _die()
        return real(source, destination, *args, **kwargs)
    os.replace = replace

def kill_at_directory_rename():
    """Die when atomic_directory moves its finished folder into place (the old one already moved aside)."""
    real = pathlib.Path.rename
    def rename(self, target):
        if ".partial-" in self.name:
            _die()
        return real(self, target)
    pathlib.Path.rename = rename

def kill_at_hdf5_write(nth):
    """Die at the nth write into an HDF5 dataset."""
    import h5py
    real, seen = h5py.Dataset.__setitem__, [0]
    def setitem(self, key, value):
        seen[0] += 1
        if seen[0] == nth:
            self.file.flush()
            _die()
        return real(self, key, value)
    h5py.Dataset.__setitem__ = setitem

KILL = ARGS.pop("kill")
{"replace": lambda: kill_at_replace(*KILL[1:]), "directory": kill_at_directory_rename,
 "hdf5": lambda: kill_at_hdf5_write(*KILL[1:])}[KILL[0]]()
'''


def run_killed(body: str, **arguments) -> None:
    """Run ``body`` in a child with ``arguments`` (``kill`` names the hook) and check it died of SIGKILL."""
    code = HOOKS + textwrap.dedent(body) + "\nraise SystemExit('the kill hook never fired')\n"
    result = subprocess.run([sys.executable, "-c", code, json.dumps(arguments, default=str)], capture_output=True,
                            text=True, timeout=300, cwd=REPO)
    assert result.returncode == -signal.SIGKILL, result.stdout[-2000:] + result.stderr[-3000:]


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def files_of(folder: Path) -> dict[str, Path]:
    return {str(p.relative_to(folder)): p for p in sorted(folder.rglob("*")) if p.is_file()}


def assert_no_partial(folder: Path) -> None:
    """Nothing under ``folder`` is a temporary of an interrupted write."""
    leftovers = [str(p) for p in folder.rglob("*") if PARTIAL in p.name or ".old-" in p.name]
    assert not leftovers, leftovers


def assert_same_folder(expected: Path, actual: Path) -> None:
    """The same files; byte-identical, except .npz matrices compared array by array (zip timestamps)."""
    want, got = files_of(expected), files_of(actual)
    assert sorted(got) == sorted(want)
    for name, path in want.items():
        if name.endswith(".npz"):
            with np.load(path) as a, np.load(got[name]) as b:
                assert sorted(a.files) == sorted(b.files), name
                for key in a.files:
                    nan = a[key].dtype.kind in "fc"
                    assert a[key].dtype == b[key].dtype and np.array_equal(a[key], b[key], equal_nan=nan), (name, key)
        else:
            assert sha256(got[name]) == sha256(path), name


# ---------------------------------------------------------------- (a) a preprocessing batch

PREPROCESS = '''
from brainscale.config import validate_config
from brainscale.preprocessing.batch import preprocess_batch
from brainscale.preprocessing.discovery import find_runs
from brainscale.simulate.dataset import SPACE, demo_atlas_paths
runs = [r for r in find_runs(pathlib.Path(ARGS["dataset"]) / "fmriprep", space=SPACE, task="rest")
        if r.run_id in ARGS["runs"]]
preprocess_batch(runs, demo_atlas_paths(pathlib.Path(ARGS["dataset"]), 6), validate_config({})["preprocess"],
                 ARGS["output"], space=SPACE, log=lambda line: None)
'''


@pytest.fixture(scope="module")
def batch_runs(tiny_dataset):
    """Three runs of the tiny dataset (at least two included ones, so the kill falls between matrices)."""
    return find_runs(tiny_dataset / "fmriprep", space=SPACE, task="rest")[:3]


@pytest.fixture(scope="module")
def reference_batch(tiny_dataset, batch_runs, tmp_path_factory):
    output = tmp_path_factory.mktemp("reference") / "batch-0"
    preprocess_batch(batch_runs, demo_atlas_paths(tiny_dataset, 6), CONFIG["preprocess"], output, space=SPACE,
                     log=lambda line: None)
    assert len(list(output.glob("*.npz"))) >= 2
    return output


@pytest.mark.parametrize("moment", ["mid_matrix", "mid_swap"])
def test_killed_preprocessing_batch_leaves_nothing_partial_and_reruns_identically(
        moment, tiny_dataset, batch_runs, reference_batch, tmp_path):
    output = tmp_path / "preprocess" / "batch-0"
    if moment == "mid_swap":  # an older, complete output is being replaced
        shutil.copytree(reference_batch, output)
        (output / "qc.tsv").write_text("stale\n")
        kill = ["directory"]
    else:  # the second matrix half written
        kill = ["replace", 2, "_desc-clean_timeseries"]
    run_killed(PREPROCESS, kill=kill, dataset=tiny_dataset, runs=[r.run_id for r in batch_runs], output=output)
    # The batch folder is complete or absent: never a folder that is missing matrices or holds a cut one.
    assert not output.exists()
    assert any(PARTIAL in p.name for p in output.parent.iterdir())  # the kill came while writing
    preprocess_batch(batch_runs, demo_atlas_paths(tiny_dataset, 6), CONFIG["preprocess"], output, space=SPACE,
                     log=lambda line: None)
    assert_same_folder(reference_batch, output)
    assert [p.name for p in output.parent.iterdir()] == ["batch-0"]  # the stale temporaries were removed


# ---------------------------------------------------------------- (b) shard writing

SHARDS = '''
from brainscale.config import validate_config
from brainscale.preprocessing.discovery import load_participants
from brainscale.shards.writer import write_shards
config = validate_config({})
phenotypes = load_participants(ARGS["participants"], config["data"]["phenotypes"])
write_shards(ARGS["files"], phenotypes, ARGS["mapping"], ARGS["settings"], ARGS["output"], log=lambda line: None)
'''

SHARD_SETTINGS = dict(CONFIG["shards"], max_runs_per_shard=3, dtype="float32")


@pytest.mark.parametrize("moment", ["mid_shard", "mid_swap"])
def test_killed_shard_writing_leaves_nothing_partial_and_reruns_identically(moment, tiny_dataset, preprocessed,
                                                                           shards, tmp_path):
    files, phenotypes, mapping = preprocessed
    output = tmp_path / "shards"
    if moment == "mid_swap":
        shutil.copytree(shards, output)
        (output / "manifest.json").write_text("{}\n")
        kill = ["directory"]
    else:  # the second shard half filled (3 runs x 3 datasets per shard)
        kill = ["hdf5", 9 + 4]
    run_killed(SHARDS, kill=kill, files=files, mapping=mapping, settings=SHARD_SETTINGS, output=output,
               participants=tiny_dataset / "fmriprep" / "participants.tsv")
    assert not output.exists()
    partial = [p for p in output.parent.iterdir() if PARTIAL in p.name]
    assert partial
    if moment == "mid_shard":  # the kill left a cut shard, but only under the temporary name
        assert (partial[0] / "shard-00001.h5").is_file() and not (partial[0] / "manifest.json").exists()
    write_shards(files, phenotypes, mapping, SHARD_SETTINGS, output, log=lambda line: None)
    assert_same_folder(shards, output)  # shards and manifest byte-identical
    assert [p.name for p in output.parent.iterdir()] == ["shards"]


# ---------------------------------------------------------------- (c) embedding caching

EMBED = '''
from brainscale.probing.embeddings import embed_checkpoint
embed_checkpoint(ARGS["checkpoint"], ARGS["shards"], ARGS["splits"], ARGS["output"], ARGS["settings"])
'''


@pytest.fixture(scope="module")
def embedding_inputs(shards, tmp_path_factory):
    """A random encoder, probe splits of the shards' subjects, and the uninterrupted feature file."""
    folder = tmp_path_factory.mktemp("embedding")
    subjects = set()
    for path in sorted(shards.glob("shard-*.h5")):
        with h5py.File(path, "r") as shard:
            subjects |= set(shard["long_subject_id"][:].astype(str))
    subjects = np.array(sorted(subjects))[:4]
    splits = folder / "splits"
    splits.mkdir()
    for name, part in zip(("train", "val", "test"), (subjects[:2], subjects[2:3], subjects[3:])):
        np.save(splits / f"probe_{name}.npy", part)
    checkpoint = folder / "encoder.pt"
    write_random_encoder(run_spec(CONFIG["pretrain"], "semantoks-tiny"), PretrainingData(shards, (), 0), 5, checkpoint)
    settings = dict(CONFIG["embed"], n_crops=2, cache_dir=str(folder / "cache"))
    reference = folder / "reference.h5"
    assert not embed_checkpoint(checkpoint, shards, splits, reference, settings)
    return checkpoint, splits, settings, reference


@pytest.mark.parametrize("moment", ["mid_cache_entry", "mid_output"])
def test_killed_embedding_cache_leaves_nothing_partial_and_reruns_identically(moment, shards, embedding_inputs,
                                                                             tmp_path):
    checkpoint, splits, settings, reference = embedding_inputs
    settings = dict(settings, cache_dir=str(tmp_path / "cache"))
    output = tmp_path / "features" / "random.h5"
    # The cache entry is placed first (killed half written), then the output (a hard link to the entry:
    # killed before its rename, the link itself is not cut).
    nth, cut = {"mid_cache_entry": (1, True), "mid_output": (2, False)}[moment]
    run_killed(EMBED, kill=["replace", nth, ".h5", cut], checkpoint=checkpoint, shards=shards, splits=splits,
               output=output, settings=settings)
    entries = [p for p in (tmp_path / "cache").iterdir() if PARTIAL not in p.name]
    assert not output.exists()
    assert len(entries) == (moment == "mid_output")  # a cut entry never sits under its key
    hit = embed_checkpoint(checkpoint, shards, splits, output, settings)
    assert hit == (moment == "mid_output")
    assert sha256(output) == sha256(reference)  # feature files are byte-deterministic
    table = read_features(output)
    assert table.features["cls"].shape[0] == len(table.subjects) > 0


# ---------------------------------------------------------------- (d) checkpoint saving in pretraining

PRETRAIN = '''
import numpy as np
from brainscale.objectives import run_spec
from brainscale.training.logbook import log_columns
from brainscale.training.loop import pretrain
pretrain(run_spec(ARGS["settings"]), ARGS["shards"], np.array(ARGS["subjects"]), ARGS["output"], log=lambda line: None)
'''


def pretrain_settings() -> dict:
    raw = yaml.safe_load(MINIMAL_CONFIG.read_text())
    raw["pretrain"].update(budget=BUDGET, device="cpu")
    return validate_config(raw)["pretrain"]


def read_log(path: Path) -> pd.DataFrame:
    """The training log without its one timing column."""
    return pd.read_csv(path).drop(columns=list(TIMING_COLUMNS))


def assert_same_weights(expected: Path, actual: Path) -> None:
    """Two torch files with equal contents (torch.save itself is not byte-deterministic)."""
    def flat(value, prefix=""):
        if isinstance(value, dict):
            for key, item in value.items():
                yield from flat(item, f"{prefix}/{key}")
        elif isinstance(value, (list, tuple)):
            for index, item in enumerate(value):
                yield from flat(item, f"{prefix}/{index}")
        else:
            yield prefix, value

    want = dict(flat(torch.load(expected, map_location="cpu", weights_only=False)))
    got = dict(flat(torch.load(actual, map_location="cpu", weights_only=False)))
    assert sorted(got) == sorted(want)
    for key, value in want.items():
        if isinstance(value, torch.Tensor):
            assert torch.equal(value, got[key]), key
        elif isinstance(value, float) and np.isnan(value):
            assert np.isnan(got[key]), key
        elif not key.startswith("/log_rows/") or int(key.rsplit("/", 1)[1]) not in TIMING_INDICES:
            assert value == got[key], key


def test_killed_checkpoint_save_resumes_from_the_last_complete_checkpoint(shards, tmp_path):
    settings = pretrain_settings()
    with h5py.File(sorted(shards.glob("shard-*.h5"))[0], "r") as shard:
        subjects = sorted(set(shard["long_subject_id"][:].astype(str)))[:2]
    reference = tmp_path / "reference"
    pretrain(run_spec(settings), shards, np.array(subjects), reference, log=lambda line: None)
    output = tmp_path / "killed"
    # Killed while writing the step-4 checkpoint: the step-2 one must be what a rerun finds.
    run_killed(PRETRAIN, kill=["replace", 2, "checkpoint.pt"], settings=settings, shards=shards, subjects=subjects,
               output=output)
    assert torch.load(output / "checkpoint.pt", map_location="cpu", weights_only=False)["step"] == 2
    assert not (output / "encoder.pt").exists()
    lines = []
    pretrain(run_spec(settings), shards, np.array(subjects), output, log=lines.append)
    assert any(re.fullmatch(r"resuming from .*checkpoint\.pt at step 2", line) for line in lines), lines
    pd.testing.assert_frame_equal(read_log(output / "log.csv"), read_log(reference / "log.csv"))
    assert_same_weights(reference / "encoder.pt", output / "encoder.pt")
    assert_same_weights(reference / "checkpoint.pt", output / "checkpoint.pt")


# ---------------------------------------------------------------- (e) a pretraining job under Snakemake

# Loaded by every Python process of the workflow (PYTHONPATH); acts only in the pretrain job when
# BRAINSCALE_FAULT_MARKER is set: once the first checkpoint is in place and the second is half written,
# it says so in the marker file and waits to be killed.
SITECUSTOMIZE = '''
import os, sys
if os.environ.get("BRAINSCALE_FAULT_MARKER") and sys.argv and sys.argv[0].endswith("pretrain.py"):
    import time
    _replace, _seen = os.replace, [0]
    def _hooked(source, destination, *args, **kwargs):
        if str(destination).endswith("checkpoint.pt"):
            _seen[0] += 1
            if _seen[0] == 2:
                with open(source, "r+b") as handle:
                    handle.truncate(os.path.getsize(source) // 2)
                with open(os.environ["BRAINSCALE_FAULT_MARKER"], "w") as marker:
                    marker.write(str(os.getpid()))
                time.sleep(600)
        return _replace(source, destination, *args, **kwargs)
    os.replace = _hooked
'''

TARGET = "results/pretrain/semantoks-tiny/n-2_seed-0/encoder.pt"


def snakemake_command(workdir: Path, *args) -> list[str]:
    return [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), TARGET, "--cores", "2",
            "--configfile", str(MINIMAL_CONFIG), str(workdir / "override.yaml"), *args]


def test_pretraining_job_killed_under_snakemake_resumes_with_rerun_incomplete(tmp_path):
    (tmp_path / "override.yaml").write_text(yaml.safe_dump({"pretrain": {"budget": BUDGET}}))
    folder = tmp_path / "results" / "pretrain" / "semantoks-tiny" / "n-2_seed-0"
    rule_log = tmp_path / "logs" / "pretrain" / "semantoks-tiny_n-2_seed-0.log"
    # Uninterrupted: the upstream stages and the pretrain job.
    result = subprocess.run(snakemake_command(tmp_path), cwd=tmp_path, capture_output=True, text=True, timeout=600,
                            env=SNAKEMAKE_ENV)
    assert result.returncode == 0, result.stderr[-3000:]
    uninterrupted = read_log(folder / "log.csv")
    assert list(uninterrupted["step"]) == list(range(6))
    shutil.rmtree(folder)
    # Again, with the whole Snakemake process group killed while the job writes its second checkpoint
    # (as when a node is lost: Snakemake cannot mark anything, the outputs stay incomplete).
    hooks = tmp_path / "hooks"
    hooks.mkdir()
    (hooks / "sitecustomize.py").write_text(SITECUSTOMIZE)
    marker = tmp_path / "killed-here"
    environment = dict(SNAKEMAKE_ENV, BRAINSCALE_FAULT_MARKER=str(marker),
                       PYTHONPATH=os.pathsep.join([str(hooks), os.environ.get("PYTHONPATH", "")]))
    process = subprocess.Popen(snakemake_command(tmp_path), cwd=tmp_path, env=environment, start_new_session=True,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 300
        while not (marker.is_file() and marker.read_text()):
            assert process.poll() is None, "snakemake ended before the pretrain job reached its second checkpoint"
            assert time.monotonic() < deadline, "the pretrain job never reached its second checkpoint"
            time.sleep(0.2)
        job = int(marker.read_text())
        os.killpg(process.pid, signal.SIGKILL)
        try:
            os.kill(job, signal.SIGKILL)
        except ProcessLookupError:
            pass
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=60)
    assert torch.load(folder / "checkpoint.pt", map_location="cpu", weights_only=False)["step"] == 2
    assert not (folder / "encoder.pt").exists()
    # The rerun (after --unlock: the killed Snakemake kept its lock) resumes from that checkpoint and
    # reproduces the uninterrupted losses.
    unlock = subprocess.run(snakemake_command(tmp_path, "--unlock"), cwd=tmp_path, capture_output=True, text=True,
                            timeout=300, env=SNAKEMAKE_ENV)
    assert unlock.returncode == 0, unlock.stderr[-3000:]
    result = subprocess.run(snakemake_command(tmp_path, "--rerun-incomplete"), cwd=tmp_path, capture_output=True,
                            text=True, timeout=600, env=SNAKEMAKE_ENV)
    assert result.returncode == 0, result.stderr[-3000:]
    jobs = re.findall(r"Finished jobid: \d+ \(Rule: (\w+)\)", result.stdout + result.stderr)
    assert jobs == ["pretrain"], jobs  # nothing upstream is redone
    assert re.search(r"resuming from \S*checkpoint\.pt at step 2\b", rule_log.read_text()), rule_log.read_text()
    pd.testing.assert_frame_equal(read_log(folder / "log.csv"), uninterrupted)
    assert (folder / "encoder.pt").is_file() and (folder / "loss.png").is_file()
