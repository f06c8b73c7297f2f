#!/usr/bin/env bash
# Download the wheels pinned in benchmarks/device/wheels.txt into .whl/ for the offline
# GPU machine (CPython 3.12, x86_64 manylinux). Run from the repository root, with internet.
# On the device:  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir \
#                   --upgrade --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site:src
set -euo pipefail

cd "$(git rev-parse --show-toplevel)"
req=benchmarks/device/wheels.txt
dest=.whl
# Pinned packages that PyPI has only as an sdist: built here into a pure py3-none-any wheel.
sdist_only=(connection-pool)

# keep .whl/ out of git (it travels to the device via `carry`, not via commits)
exclude="$(git rev-parse --git-path info/exclude)"
mkdir -p "$(dirname "$exclude")"
touch "$exclude"
grep -qxF '.whl/' "$exclude" || echo '.whl/' >>"$exclude"

# start clean so .whl/ holds exactly one version of each listed package
rm -rf "$dest"
mkdir -p "$dest"

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
grep -vE '^\s*(#|$)' "$req" | sed 's/\s*#.*//' >"$tmp/all.txt"
pattern=$(printf '%s|' "${sdist_only[@]}")
grep -viE "^(${pattern%|})==" "$tmp/all.txt" >"$tmp/binary.txt"
grep -iE "^(${pattern%|})==" "$tmp/all.txt" >"$tmp/sdist.txt"

python3 -m pip download --quiet --disable-pip-version-check \
  --no-deps --only-binary=:all: \
  --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 \
  --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
  --platform manylinux1_x86_64 --platform any \
  -d "$dest" -r "$tmp/binary.txt"

if [ -s "$tmp/sdist.txt" ]; then
  python3 -m pip wheel --quiet --disable-pip-version-check --no-deps \
    --no-binary="$(IFS=,; echo "${sdist_only[*]}")" -w "$tmp/built" -r "$tmp/sdist.txt"
  for w in "$tmp"/built/*.whl; do
    case "$w" in
      *-none-any.whl) cp "$w" "$dest/" ;;
      *) echo "error: $(basename "$w") is not a pure python wheel" >&2; exit 1 ;;
    esac
  done
fi

# exactly one wheel per listed requirement
want=$(wc -l <"$tmp/all.txt")
have=$(find "$dest" -maxdepth 1 -type f -name '*.whl' | wc -l)
if [ "$want" -ne "$have" ]; then
  echo "error: $req pins $want packages but $dest/ holds $have wheels" >&2
  exit 1
fi

find "$dest" -maxdepth 1 -type f -name '*.whl' -printf '%s\t%f\n' | sort -k2 |
  awk -F'\t' '{printf "%9.1f KiB  %s\n", $1/1024, $2}'
bytes=$(find "$dest" -maxdepth 1 -type f -name '*.whl' -printf '%s\n' | awk '{s+=$1} END {print s}')
mib=$(awk -v b="$bytes" 'BEGIN {printf "%.1f", b/1048576}')
echo "total: $have wheels, $bytes bytes ($mib MiB) in $dest/"
if [ "$bytes" -ge $((40 * 1024 * 1024)) ]; then
  echo "error: $dest/ is over 40 MiB" >&2
  exit 1
fi
