#!/usr/bin/env bash
# Install vlat (editable) with its dev tools, on the dependency set the suite passed with.
#
#   bash scripts/install.sh                     the locked set, requirements/lock.txt (default)
#   VLAT_DEPS=newest bash scripts/install.sh    the newest releases pyproject.toml allows instead
#
# With no torch yet, the locked torch version is installed first (override with VLAT_TORCH_SPEC): the CPU build
# where the machine's package index serves one (as here), the usual CUDA build elsewhere. An unpinned torch would
# pull the newest multi-GB CUDA build. A torch that is already installed is kept as it is.
# PYTHON chooses the interpreter (default: python).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python}
LOCK=requirements/lock.txt
mode=${VLAT_DEPS:-locked}
case "$mode" in
  locked | newest) ;;
  *) echo "scripts/install.sh: VLAT_DEPS=$mode: expected locked or newest" >&2; exit 2 ;;
esac
locked_torch=$(sed -n 's/^torch==\([^ +]*\).*/\1/p' "$LOCK")
if ! "$PY" -c "import torch" >/dev/null 2>&1; then
  "$PY" -m pip install "${VLAT_TORCH_SPEC:-torch==$locked_torch}"
fi
constraints=()
if [ "$mode" = locked ]; then
  # the torch already installed (CUDA build, another version) stays: the lock constrains everything else
  tmp=$(mktemp)
  trap 'rm -f "$tmp"' EXIT
  grep -v '^torch==' "$LOCK" > "$tmp"
  constraints=(-c "$tmp")
fi
"$PY" -m pip install -q -e ".[dev]" "${constraints[@]}"
