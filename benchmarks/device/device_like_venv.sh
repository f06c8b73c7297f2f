#!/usr/bin/env bash
# A virtual environment shaped like the device's Python (CPython 3.12, the packages its image holds that
# the workflow touches), without brainscale and without what wheels.txt carries, so that
# the CPU smoke test of the device session also checks the wheel set:
#
#   bash benchmarks/device/device_like_venv.sh /tmp/devenv
#   SMOKE=1 PYTHON=/tmp/devenv/bin/python bash benchmarks/device/gpu_session.sh all
#
# The image's packages: benchmarks/device/image.txt.
set -euo pipefail
venv=${1:?usage: device_like_venv.sh FOLDER}
python=${PYTHON312:-$(command -v python3.12 || true)}
if [ -z "$python" ] || ! "$python" -c 'import sys; assert sys.version_info[:2] == (3, 12)' 2> /dev/null; then
    echo "error: no Python 3.12 found (the device's is 3.12.3); set PYTHON312 to one" >&2
    exit 1
fi
"$python" -m venv "$venv"
# the image's packages (image.txt), torch at the version this machine's disk holds (a plain requirement
# downloads a multi-GB CUDA build), the rest at PyPI's newest, as the image
mapfile -t packages < <(grep -vE '^\s*(#|$)' "$(dirname "$0")/image.txt" | grep -vx torch)
"$venv/bin/pip" install -q torch==2.13.0 "${packages[@]}"
"$venv/bin/python" -c 'import torch, numpy; print("device-like venv:", torch.__version__, numpy.__version__)'
