#!/usr/bin/env bash
# Download the wheels the Workers harness installs into Pyodide (tests/edge/requirements-pyodide.txt:
# every one pinned and hashed) into tests/edge/build/wheels/ (git-ignored), or into $1.
#
# --platform/--python-version describe Pyodide 314 (CPython 3.14 on wasm32, ABI 2026_0), not the
# Python that runs pip; --no-deps because the file lists every wheel; nothing is installed.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
dest="${1:-$here/build/wheels}"
python="${PYTHON:-python3}"
mkdir -p "$dest"
"$python" -m pip download --quiet --no-deps --only-binary=:all: \
    --platform pyemscripten_2026_0_wasm32 --python-version 3.14 \
    --require-hashes -r "$here/requirements-pyodide.txt" -d "$dest"
echo "Pyodide wheels in $dest"
