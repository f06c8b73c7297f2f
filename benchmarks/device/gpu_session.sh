#!/usr/bin/env bash
# Issue 15's device session, prepared on CPU for one H100/H200 with 16 cores, in two calls of at most
# 10 minutes on the same (warm) machine, run from the repository root with the wheels of
# benchmarks/device/wheels.txt in .whl/:
#
#   bash benchmarks/device/fetch_wheels.sh                 # here, once (writes .whl/, ignored by git)
#   device run, carry [".whl"], timeout_s 600:  COMMIT=<sha> bash benchmarks/device/gpu_session.sh bench
#   device run again at once (the machine stays warm 30 s and keeps runs/, which git ignores):
#                                               COMMIT=<sha> bash benchmarks/device/gpu_session.sh study
#
# Each call ends inside DEADLINE seconds (default 570), each phase under its own timeout, so that what
# the finished phases wrote always comes back in $OUT.
#   bench  1. while the study's data are generated on 14 cores (simulate -> preprocess -> shards,
#             splits), benchmarks/train_throughput.py on 2 cores and the GPU: base model, batch 512,
#             the reference recipe against this project's (with and without torch.compile, SDPA's
#             flash backend, flash-attn if installed), MFU against the bf16 matmul peak measured in
#             the same run, peak memory, a profiler summary (throughput.json, profile-brainscale.txt);
#          2. benchmarks/loader_wait.py on the study's shards: the share of a step spent waiting for
#             data, preloaded and lazy, for 0, 6 and 12 DataLoader workers, and the host syncs of a
#             step (loader_wait.json);
#   study  3. the rest of config/gpu-study.yaml (all of it on a fresh machine): pretraining at five
#             sizes on the GPU, embeddings, probes, figures (gpu-study.tar.gz: tables, figures,
#             training logs and loss curves, Snakemake's logs).
# Both write session.log. SMOKE=1 runs the same at toy scale on a CPU (benchmarks/device/smoke.yaml).
set -uo pipefail
PART=${1:-all}
case "$PART" in bench|study|all) ;; *) echo "usage: gpu_session.sh bench|study|all"; exit 2 ;; esac
OUT=${OUT:-/tmp/brainscale-device-out}
DEADLINE=${DEADLINE:-570}
STUDY=runs/gpu-study
# SMOKE=1: the same session on a CPU at toy scale (benchmarks/device/smoke.yaml), to check the script
if [ "${SMOKE:-0}" = 1 ]; then
    MODEL=tiny BATCH=16 DEVICE=cpu LOADER_SUBSET=16 EXTRA_CONFIG=benchmarks/device/smoke.yaml STUDY=runs/gpu-smoke
    DATA_CPUS=0-1 BENCH_CPUS=0-1 PYTHON=${PYTHON:-.venv/bin/python}
else
    MODEL=base BATCH=512 DEVICE=cuda LOADER_SUBSET=256 EXTRA_CONFIG= DATA_CPUS=2-15 BENCH_CPUS=0-1 PYTHON=python3
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

if [ -d .whl ] && [ "${SMOKE:-0}" != 1 ]; then
    $PYTHON -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
        || { echo "wheel install failed"; exit 1; }
    export PYTHONPATH=/tmp/site:$PWD/src PATH=/tmp/site/bin:$PATH
    $PYTHON -m pip check | grep -v "^No broken" | head -20  # a preinstalled package older than a wheel needs
else
    export PYTHONPATH=$PWD/src
fi
echo "commit ${COMMIT:-unknown}, $(date -u +%FT%TZ), $(nproc) cores"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
$PYTHON -c "import torch, snakemake; print('torch', torch.__version__, 'cuda', torch.version.cuda, 'snakemake', snakemake.__version__)"

snake() {  # snakemake on the study's folder; the arguments are targets and options
    "$PYTHON" -m snakemake --directory "$STUDY" --configfile config/gpu-study.yaml $EXTRA_CONFIG --resources gpu=1 \
        --set-threads simulate_derivatives=14 --keep-going --rerun-incomplete "$@"
}
export -f snake
export STUDY EXTRA_CONFIG PYTHON

if [ "$PART" != study ]; then
    echo "== phase 1 at ${SECONDS}s: study data on 14 cores, throughput on 2 cores and the GPU"
    pin "$DATA_CPUS" timeout "$(budget 150)" bash -c 'snake --cores 14 results/shards results/splits' \
        > "$OUT/study-data.log" 2>&1 &
    data_job=$!
    pin "$BENCH_CPUS" timeout "$(budget 240)" "$PYTHON" benchmarks/train_throughput.py --model "$MODEL" \
        --batch "$BATCH" --steps 10 --warmup 3 --recipes reference brainscale brainscale-compile sdpa-flash \
        flash-attn --profile brainscale --device "$DEVICE" --out "$OUT"
    wait $data_job || echo "study data failed or ran out of time: see study-data.log"
    tail -n 5 "$OUT/study-data.log"

    echo "== phase 2 at ${SECONDS}s: does the loader wait?"
    subset="$STUDY/results/splits/pretrain_n-${LOADER_SUBSET}_seed-0.npy"
    if [ -f "$subset" ]; then
        timeout "$(budget 10)" "$PYTHON" benchmarks/loader_wait.py --shards "$STUDY/results/shards" \
            --subset "$subset" --model "$MODEL" --batch "$BATCH" --steps 16 --workers 0 6 12 \
            --readers preloaded lazy --device "$DEVICE" --out "$OUT"
    fi
fi
if [ "$PART" != bench ]; then
    echo "== phase 3 at ${SECONDS}s: pretraining, embeddings, probes, figures"
    timeout "$(budget 15)" bash -c 'snake --cores 16'
fi
echo "== done at ${SECONDS}s"
