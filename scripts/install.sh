#!/usr/bin/env bash
# Install vlat (editable) with its dev tools.
#
# On a CPU-only machine with no torch yet, the CPU build of torch is installed first (pinned to 2.13.0, which this
# project is tested with; override with VLAT_TORCH_SPEC). An unpinned torch would pull a multi-GB CUDA build there.
# Machines with an NVIDIA GPU, or with torch already installed, keep the usual torch install.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python}
if ! "$PY" -c "import torch" >/dev/null 2>&1; then
  if command -v nvidia-smi >/dev/null 2>&1; then
    "$PY" -m pip install torch
  else
    "$PY" -m pip install "${VLAT_TORCH_SPEC:-torch==2.13.0}"
  fi
fi
"$PY" -m pip install -q -e ".[dev]"
