#!/usr/bin/env bash
# The GPU issue's device session, prepared on CPU for one H100/H200 with 16 cores. A session has 15
# minutes of device time in all (the machine's start, a minute or more, and its idle waits count), so
# it is two calls on the same warm machine, from the repository root, with the wheels of
# benchmarks/device/wheels.txt in .whl/:
#
#   bash benchmarks/device/fetch_wheels.sh                 # here, once (writes .whl/, ignored by git)
#   device run, carry [".whl"], timeout_s 300:  COMMIT=<sha> bash benchmarks/device/gpu_session.sh bench
#   device run again at once (warm for 30 s; runs/, which git ignores, stays there), timeout_s = the
#   status's budget_left_s less 60, at most 400:
#                          COMMIT=<sha> DEADLINE=<timeout_s - 30> bash benchmarks/device/gpu_session.sh study
#
# Each call ends inside DEADLINE seconds (bench 270, study 370, all 570 unless set), each phase under its own
# timeout, so that what the finished phases wrote always comes back in $OUT.
#   bench  1. while the study's data are generated on 14 cores (simulate -> preprocess -> shards,
#             splits), benchmarks/train_throughput.py on 2 cores and the GPU: base model, batch 512,
#             the reference recipe against this project's (with and without torch.compile, SDPA's
#             flash backend, flash-attn if installed), MFU against the bf16 matmul peak measured in
#             the same run, peak memory, a profiler summary (throughput.json, profile-brainscale.txt);
#          2. benchmarks/loader_wait.py on the study's shards: the share of a step spent waiting for
#             data, preloaded and lazy, for 0, 6 and 12 DataLoader workers, and the host syncs of a
#             step (loader_wait.json); then the study's largest run through Snakemake, timed, and the
#             study's pretraining time estimated from it (session.log: "one run ...");
#   study  3. the rest of config/gpu-study.yaml (first the data and the loader check, where bench did not
#             finish them): GPU_JOBS (4) pretraining jobs at a time on the GPU,
#             a. every run's pretraining, its held-out loss and the loss scaling-law fits (the field's
#                measure, and what needs the GPU), then
#             b. embeddings, probes and the probe scaling figures with what time is left;
#             packed as gpu-study.tar.gz (tables, figures, training logs and loss curves, Snakemake's
#             logs) whatever finished.
# Both write session.log. SMOKE=1 runs the same at toy scale on a CPU (benchmarks/device/smoke.yaml);
# with PYTHON set to a virtual environment made by benchmarks/device/device_like_venv.sh (the device's
# packages, brainscale not installed) it also checks that the wheels complete the device's Python.
set -uo pipefail
PART=${1:-all}
case "$PART" in
    bench) DEADLINE=${DEADLINE:-270} ;;
    study) DEADLINE=${DEADLINE:-370} ;;
    all) DEADLINE=${DEADLINE:-570} ;;
    *) echo "usage: gpu_session.sh bench|study|all"; exit 2 ;;
esac
OUT=${OUT:-/tmp/brainscale-device-out}
GPU_JOBS=${GPU_JOBS:-4}
STUDY=runs/gpu-study
# SMOKE=1: the same session on a CPU at toy scale (benchmarks/device/smoke.yaml), to check the script
if [ "${SMOKE:-0}" = 1 ]; then
    MODEL=tiny BATCH=16 DEVICE=cpu LOADER_SUBSET=16 EXTRA_CONFIG=benchmarks/device/smoke.yaml STUDY=runs/gpu-smoke
    TIMED_RUN=semantoks-tiny/n-32_seed-0
    DATA_CPUS=0-1 BENCH_CPUS=0-1 CORES=2 PYTHON=${PYTHON:-.venv/bin/python}
else
    MODEL=base BATCH=512 DEVICE=cuda LOADER_SUBSET=256 EXTRA_CONFIG= DATA_CPUS=2-15 BENCH_CPUS=0-1 CORES=16 PYTHON=python3
    TIMED_RUN=semantoks-small/n-1024_seed-0
fi
mkdir -p "$OUT"
exec > >(tee "$OUT/session.log") 2>&1
export PYTHONUNBUFFERED=1 PYTHONWARNINGS=ignore MPLBACKEND=Agg

# seconds for a phase: what is left before the deadline less what the later phases need (at least 20)
budget() { local seconds=$((DEADLINE - SECONDS - $1)); echo $((seconds < 20 ? 20 : seconds)); }
pin() { if command -v taskset > /dev/null; then taskset -c "$@"; else shift; "$@"; fi; }

pack() {
    if [ -d "$STUDY/results" ]; then
        tar -czf "$OUT/gpu-study.tar.gz" -C "$STUDY" \
            $(cd "$STUDY" && ls -d results/gpu-study results/qc/runs.tsv logs .snakemake/log 2>/dev/null) \
            $(cd "$STUDY" && find results/pretrain -name log.csv -o -name loss.png 2>/dev/null) 2>/dev/null
    fi
    echo "packed at ${SECONDS}s: $(ls "$OUT" | tr '\n' ' ')"
}
trap pack EXIT

# brainscale runs from src/ (not installed): the workflow's scripts and the benchmarks import it from there.
# The wheels are CPython 3.12's (the device's): a smoke test under another Python uses its own packages.
if [ -d .whl ] && ! "$PYTHON" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 12))'; then
    echo "not installing .whl/ (CPython 3.12 wheels) into $("$PYTHON" -V): this Python's own packages are used"
    export PYTHONPATH=$PWD/src
elif [ -d .whl ]; then
    rm -rf /tmp/site
    "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
        || { echo "wheel install failed"; exit 1; }
    export PYTHONPATH=/tmp/site:$PWD/src PATH=/tmp/site/bin:$PATH
    "$PYTHON" -m pip check | grep -v "^No broken\|^brainscale " | head -20  # a preinstalled package older than a wheel needs
else
    export PYTHONPATH=$PWD/src
fi
echo "commit ${COMMIT:-unknown}, $(date -u +%FT%TZ), $(nproc) cores, deadline ${DEADLINE}s"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2> /dev/null || true
"$PYTHON" -c "import torch, snakemake; print('torch', torch.__version__, 'cuda', torch.version.cuda, 'snakemake', snakemake.__version__)"

snake() {  # snakemake on the study's folder; the arguments are targets and options
    "$PYTHON" -m snakemake --directory "$STUDY" --configfile config/gpu-study.yaml $EXTRA_CONFIG \
        --resources gpu="$GPU_JOBS" --set-threads simulate_derivatives=14 --keep-going --rerun-incomplete "$@"
}
export -f snake
export STUDY EXTRA_CONFIG PYTHON GPU_JOBS

loader_wait() {  # phase 2, once per machine (runs/ keeps the mark between the two calls)
    local subset="$STUDY/results/splits/pretrain_n-${LOADER_SUBSET}_seed-0.npy"
    if [ -f "$subset" ] && [ ! -f "$STUDY/loader-wait.done" ]; then
        echo "== phase 2 at ${SECONDS}s: does the loader wait?"
        timeout "$(budget "$1")" "$PYTHON" benchmarks/loader_wait.py --shards "$STUDY/results/shards" \
            --subset "$subset" --model "$MODEL" --batch "$BATCH" --steps 16 --workers 0 6 12 \
            --readers preloaded lazy --device "$DEVICE" --out "$OUT" && touch "$STUDY/loader-wait.done"
    fi
}

if [ "$PART" != study ]; then
    echo "== phase 1 at ${SECONDS}s: study data on 14 cores, throughput on 2 cores and the GPU"
    pin "$DATA_CPUS" timeout "$(budget 50)" bash -c 'snake --cores 14 results/shards results/splits' \
        > "$OUT/study-data.log" 2>&1 &
    data_job=$!
    pin "$BENCH_CPUS" timeout "$(budget 60)" "$PYTHON" benchmarks/train_throughput.py --model "$MODEL" \
        --batch "$BATCH" --steps 10 --warmup 3 --recipes reference brainscale brainscale-compile sdpa-flash \
        flash-attn --profile brainscale --device "$DEVICE" --out "$OUT"
    wait $data_job || echo "study data failed or ran out of time (the study call goes on): see study-data.log"
    tail -n 5 "$OUT/study-data.log"
    loader_wait 40
    # the largest run of the study, timed through Snakemake (part of the study: the next call keeps it)
    echo "== phase 2b at ${SECONDS}s: one study run ($TIMED_RUN), for the study's time estimate"
    started=$SECONDS
    if timeout "$(budget 5)" bash -c "snake --cores $CORES results/pretrain/$TIMED_RUN/encoder.pt" > "$OUT/timed-run.log" 2>&1; then
        "$PYTHON" - "$((SECONDS - started))" config/config.yaml config/gpu-study.yaml $EXTRA_CONFIG <<'ESTIMATE'
import os, sys, yaml
from snakemake.utils import update_config
seconds, files = int(sys.argv[1]), sys.argv[2:]
config = {}
for path in files:  # each --configfile over the Snakefile's config, as Snakemake merges them
    update_config(config, yaml.safe_load(open(path)))
runs = (len(config["pretrain"]["objectives"]) * len(config["splits"]["pretrain_sizes"])
        * len(config["splits"]["pretrain_seeds"]))
at_once = max(int(os.environ["GPU_JOBS"]), 1)
print(f"one run {seconds} s: the study's {runs} runs, {at_once} at a time, take at most about "
      f"{runs * seconds / at_once:.0f} s if they overlap well (this is the largest run; the others are shorter)")
ESTIMATE
    else
        echo "the timed run did not finish: see timed-run.log"
    fi
fi
if [ "$PART" != bench ]; then
    if [ ! -f "$STUDY/loader-wait.done" ]; then  # bench did not get that far: its data, then the loader check
        echo "== phase 3 at ${SECONDS}s: the study's data and the loader check"
        timeout "$(budget 200)" bash -c "snake --cores $CORES results/shards results/splits" > "$OUT/study-data.log" \
            2>&1 || echo "study data failed or ran out of time: see study-data.log"
        loader_wait 180
    fi
    echo "== phase 3a at ${SECONDS}s: pretraining, $GPU_JOBS jobs at a time; held-out loss and its scaling fits"
    timeout "$(budget 60)" bash -c "snake --cores $CORES learning_curves loss_scaling"
    echo "== phase 3b at ${SECONDS}s: embeddings, probes, figures"
    timeout "$(budget 15)" bash -c "snake --cores $CORES"
fi
echo "== done at ${SECONDS}s"
