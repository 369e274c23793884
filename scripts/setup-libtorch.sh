#!/usr/bin/env bash
# Installs libtorch 2.11.0 (from the PyTorch wheel on PyPI) into the project-local,
# git-ignored `.venv/`, and points the stable symlink `.libtorch` at it.
# Idempotent: when `.libtorch/lib/libtorch_cpu.so` exists and the stamp matches, it does nothing.
set -euo pipefail
cd "$(dirname "$0")/.."

TORCH_VERSION="2.11.0"
STAMP=".venv/.balance-torch-${TORCH_VERSION}"

if [[ -f "$STAMP" && -e .libtorch/lib/libtorch_cpu.so ]]; then
  exit 0
fi

PYTHON="${PYTHON:-python3}"
echo "balance: installing libtorch ${TORCH_VERSION} into .venv (first use only, ~5 GB)..." >&2
if [[ ! -x .venv/bin/python ]]; then
  "$PYTHON" -m venv .venv
fi
.venv/bin/python -m pip install --quiet --disable-pip-version-check "torch==${TORCH_VERSION}" numpy >&2
TORCH_DIR="$(.venv/bin/python -c 'import torch, os; print(os.path.dirname(torch.__file__))')"
ln -sfn "$TORCH_DIR" .libtorch
touch "$STAMP"
echo "balance: libtorch ready at .libtorch -> $TORCH_DIR" >&2
