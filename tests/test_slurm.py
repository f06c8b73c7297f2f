"""The workflow through a real Slurm: `snakemake --profile slurm` on a one-node cluster started here.

As root on Debian the test installs munge, slurmctld and slurmd (apt), writes a one-node
``/etc/slurm/slurm.conf`` with a fake GPU (gres on /dev/null, so GPU rules schedule), starts
the daemons, runs the minimal config through the repository's profile plus a test layer
(``tests/slurm-profile``: squeue status checks, short polling, jobs sized for this machine),
checks every output and that each job went through sbatch, and stops the daemons by PID.
Elsewhere it skips, saying why. It never touches a Slurm it did not start.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

REPO = Path(__file__).resolve().parents[1]
MINIMAL = REPO / "tests" / "configs" / "minimal.yaml"
ONE_OBJECTIVE = REPO / "tests" / "configs" / "slurm.yaml"
TEST_LAYER = REPO / "tests" / "slurm-profile"
SLURM_CONF = Path("/etc/slurm/slurm.conf")
MARKER = "# written by brainscale tests/test_slurm.py"
PACKAGES = ["slurmctld", "slurmd", "slurm-client", "munge"]


def _skip_reason() -> str | None:
    if os.name != "posix" or os.geteuid() != 0:
        return "needs root to install and start munge, slurmctld and slurmd (CI runs it as root)"
    if not Path("/etc/debian_version").exists() or shutil.which("apt-get") is None:
        return "needs Debian's apt-get to install Slurm"
    if SLURM_CONF.exists() and MARKER not in SLURM_CONF.read_text():
        return f"{SLURM_CONF} belongs to another Slurm installation; not touching it"
    try:
        import snakemake_executor_plugin_slurm  # noqa: F401
    except ImportError:
        return "snakemake-executor-plugin-slurm is not installed (pip install -e '.[test]')"
    return None


def _run(*command, **options) -> subprocess.CompletedProcess:
    return subprocess.run(command, check=True, capture_output=True, text=True, **options)


def _install() -> None:
    if all(shutil.which(tool) for tool in ("slurmctld", "slurmd", "sbatch", "munged")):
        return
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    _run("apt-get", "update", "-q", env=env, timeout=600)
    _run("apt-get", "install", "-y", "-q", "--no-install-recommends", *PACKAGES, env=env, timeout=900)


def _write_config(spool: Path) -> None:
    host = socket.gethostname().split(".")[0]
    node = _run("slurmd", "-C").stdout.splitlines()[0]  # "NodeName=... CPUs=... RealMemory=..."
    node = " ".join(part for part in node.split() if not part.startswith("UpTime"))
    SLURM_CONF.parent.mkdir(parents=True, exist_ok=True)
    SLURM_CONF.write_text(f"""{MARKER}
ClusterName=brainscale-test
SlurmctldHost={host}
SlurmUser=root
AuthType=auth/munge
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
MinJobAge=3600
ReturnToService=2
GresTypes=gpu
StateSaveLocation={spool}/ctld
SlurmdSpoolDir={spool}/d
SlurmctldPidFile={spool}/slurmctld.pid
SlurmdPidFile={spool}/slurmd.pid
SlurmctldLogFile={spool}/slurmctld.log
SlurmdLogFile={spool}/slurmd.log
{node} Gres=gpu:1 State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
""")
    (SLURM_CONF.parent / "gres.conf").write_text(f"{MARKER}\nNodeName={host} Name=gpu File=/dev/null\n")


def _start_munge() -> int | None:
    """Start munged as user munge unless one runs already; its PID, or None if it was running."""
    if shutil.which("munge") and subprocess.run(["munge", "-n"], capture_output=True).returncode == 0:
        return None  # a working munged (a dead one's zombie would fool pgrep)
    key = Path("/etc/munge/munge.key")
    if not key.exists():
        _run("mungekey", "--create")
        shutil.chown(key, "munge", "munge")
        key.chmod(0o400)
    run_dir = Path("/run/munge")
    run_dir.mkdir(parents=True, exist_ok=True)
    shutil.chown(run_dir, "munge", "munge")
    (run_dir / "munged.pid").unlink(missing_ok=True)  # left by an earlier run
    _run("runuser", "-u", "munge", "--", "munged")
    return _wait_for_pid(run_dir / "munged.pid")


def _wait_for_pid(pid_file: Path, seconds: float = 30) -> int:
    """The PID a daemon writes once it has forked into the background."""
    deadline = time.monotonic() + seconds
    while not (pid_file.exists() and pid_file.read_text().strip()):
        if time.monotonic() > deadline:
            raise RuntimeError(f"{pid_file} did not appear within {seconds} s")
        time.sleep(0.2)
    return int(pid_file.read_text().split()[0])


@pytest.fixture(scope="module")
def slurm_cluster(tmp_path_factory):
    reason = _skip_reason()
    if reason:
        pytest.skip(reason)
    _install()
    spool = tmp_path_factory.mktemp("slurm-spool")
    for folder in ("ctld", "d"):
        (spool / folder).mkdir()
    _write_config(spool)
    pids = []
    munge = _start_munge()
    if munge:
        pids.append(munge)
    try:
        _run("slurmctld")
        _run("slurmd")
        for name in ("slurmctld", "slurmd"):
            pids.append(_wait_for_pid(spool / f"{name}.pid"))
        deadline = time.monotonic() + 60
        while "idle" not in _run("sinfo", "-h", "-o", "%T").stdout:
            if time.monotonic() > deadline:
                raise RuntimeError("the test node never became idle: " + (spool / "slurmctld.log").read_text()[-2000:])
            time.sleep(1)
        yield spool
    finally:
        for pid in reversed(pids):
            try:
                os.kill(pid, 15)
            except ProcessLookupError:
                pass


def snakemake_on_slurm(workdir: Path, *targets, configfiles=()) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "snakemake", *targets, "-s", str(REPO / "Snakefile"), "--profile", str(REPO / "slurm"),
         "--workflow-profile", str(TEST_LAYER), "--configfile", str(MINIMAL), str(ONE_OBJECTIVE), *map(str, configfiles)],
        cwd=workdir, capture_output=True, text=True, timeout=1800)


def test_workflow_runs_through_slurm(slurm_cluster, tmp_path):
    result = snakemake_on_slurm(tmp_path)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    for path in ("results/demo/figures/scaling.png", "results/demo/tables/scaling.tsv", "results/qc/runs.tsv",
                 "results/pretrain/semantoks-tiny/n-2_seed-0/encoder.pt",
                 "results/demo/probes/baseline/oracle/metrics.tsv"):
        assert (tmp_path / path).stat().st_size > 0, path
    assert set(pd.read_csv(tmp_path / "results" / "demo" / "tables" / "scaling.tsv", sep="\t")["family"]) >= \
        {"pretrained"}
    # Every job went through sbatch: the plugin keeps one log per Slurm job, named by its job id.
    job_logs = sorted((tmp_path / ".snakemake" / "slurm_logs").rglob("*.log"))
    rules = {path.relative_to(tmp_path / ".snakemake" / "slurm_logs").parts[0] for path in job_logs}
    assert {"rule_simulate_derivatives", "rule_preprocess_batch", "rule_pretrain", "rule_embed", "rule_probe",
            "rule_scaling_figure"} <= rules, rules
    assert all(path.stem.isdigit() for path in job_logs), job_logs[:3]
    # The training jobs asked Slurm for the (fake) GPU; nothing else did.
    for path in job_logs:
        job = _run("scontrol", "show", "job", path.stem).stdout
        assert ("gpu" in job) == ("rule_pretrain" in path.parts), path
    # A job that keeps failing is retried (profile: retries 2), then reported with its logs.
    (tmp_path / "broken.pt").write_bytes(b"not a checkpoint")
    (tmp_path / "broken.yaml").write_text(f"probe:\n  checkpoints:\n    broken: {{path: {tmp_path / 'broken.pt'}}}\n")
    failed = snakemake_on_slurm(tmp_path, "probe_all", configfiles=[tmp_path / "broken.yaml"])
    output = failed.stdout + failed.stderr
    assert failed.returncode != 0
    attempts = sorted((tmp_path / ".snakemake" / "slurm_logs" / "rule_embed" / "external_broken").glob("*.log"))
    assert len(attempts) == 3, attempts  # the first try and two retries, each its own Slurm job
    assert "logs/embed/external/broken.log" in output
    for log in (tmp_path / "logs" / "embed" / "external" / "broken.log", attempts[-1]):
        assert "broken.pt: not a readable PyTorch file" in log.read_text(), log

