#!/usr/bin/env bash
# Issue 15's device session, prepared on CPU: one call on a machine with one H100/H200 and 16 cores,
# run from the repository root with the wheels of benchmarks/device/wheels.txt in .whl/:
#
#   bash benchmarks/device/fetch_wheels.sh          # here, once (writes .whl/, ignored by git)
#   device run, carry [".whl"], timeout_s 600:
#     COMMIT=$(git rev-parse HEAD) bash benchmarks/device/gpu_session.sh   (COMMIT given on the command line)
#
# What it does, inside DEADLINE seconds (default 570), each phase under its own timeout so that the
# results of the finished phases always come back:
#   1. while the study's data are generated on 14 cores (simulate -> preprocess -> shards, splits),
#      benchmarks/train_throughput.py on 2 cores and the GPU: base model, batch 512, the reference
#      recipe against this project's (with and without torch.compile, SDPA's flash backend), MFU
#      against the bf16 matmul peak measured in the same run, peak memory, a profiler summary;
#   2. benchmarks/loader_wait.py on the study's shards: the share of a step spent waiting for data,
#      preloaded and lazy, for several DataLoader worker counts, and the host syncs of a step;
#   3. the rest of the study (config/gpu-study.yaml): pretraining at five sizes on the GPU, embeddings,
#      probes, figures.
# Everything comes back in $OUT: throughput.json, profile-brainscale.txt, loader_wait.json,
# session.log and gpu-study.tar.gz (tables, figures, training logs and loss curves, Snakemake's log).
set -uo pipefail
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
            $(cd "$STUDY" && ls -d results/tables results/figures results/qc/runs.tsv logs .snakemake/log 2>/dev/null) \
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
        --set-threads simulate_derivatives=14 --keep-going "$@"
}
export -f snake
export STUDY EXTRA_CONFIG PYTHON

echo "== phase 1 at ${SECONDS}s: study data on 14 cores, throughput on 2 cores and the GPU"
pin "$DATA_CPUS" bash -c 'snake --cores 14 results/shards results/splits' > "$OUT/study-data.log" 2>&1 &
data_job=$!
pin "$BENCH_CPUS" timeout "$(budget 360)" "$PYTHON" benchmarks/train_throughput.py --model "$MODEL" --batch "$BATCH" \
    --steps 10 --warmup 3 --recipes reference brainscale brainscale-compile sdpa-flash flash-attn \
    --profile brainscale --device "$DEVICE" --out "$OUT"
wait $data_job || echo "study data failed: see study-data.log"
tail -n 5 "$OUT/study-data.log"

echo "== phase 2 at ${SECONDS}s: does the loader wait?"
if [ -f "$STUDY/results/splits/pretrain_n-${LOADER_SUBSET}_seed-0.npy" ]; then
    timeout "$(budget 300)" "$PYTHON" benchmarks/loader_wait.py --shards "$STUDY/results/shards" \
        --subset "$STUDY/results/splits/pretrain_n-${LOADER_SUBSET}_seed-0.npy" --model "$MODEL" --batch "$BATCH" \
        --steps 16 --workers 0 6 12 --readers preloaded lazy --device "$DEVICE" --out "$OUT"
fi

echo "== phase 3 at ${SECONDS}s: pretraining, embeddings, probes, figures"
timeout "$(budget 15)" bash -c 'snake --cores 16'
echo "== done at ${SECONDS}s"
