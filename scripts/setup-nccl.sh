#!/usr/bin/env bash
# For GPU builds only (`cargo build --release -p balance-bench --features nccl`): the CUDA headers that
# c10d's ProcessGroupNCCL.hpp includes and the torch wheel's nvidia packages lack (crt/host_config.h, nv/target),
# installed into the project's .venv beside the wheel's own nvidia/cu13 headers. nccl.h comes with the
# wheel (nvidia/nccl/include). Idempotent. Not part of `make setup`: CPU builds do not need it.
set -euo pipefail
cd "$(dirname "$0")/.."
"$(dirname "$0")/setup-libtorch.sh"
if [[ -f .libtorch/../nvidia/cu13/include/crt/host_config.h && -e .libtorch/../nvidia/cu13/include/nv/target ]]; then
  exit 0
fi
echo "balance: installing the CUDA crt headers (nvidia-cuda-crt and -cccl 13.0) into .venv..." >&2
.venv/bin/python -m pip install --quiet --disable-pip-version-check --no-deps "nvidia-cuda-crt==13.0.*" "nvidia-cuda-cccl==13.0.*" >&2
