#!/usr/bin/env bash
# Refresh requirements/lock.txt: the exact set `scripts/install.sh` installs by default.
#
# Resolves the newest releases pyproject.toml allows in a fresh virtual environment (torch stays at the locked
# version unless VLAT_TORCH_SPEC names another) and writes what it got. Run the full suite on the new lock
# (bash scripts/install.sh && python -m pytest) before committing it.
set -euo pipefail
cd "$(dirname "$0")/.."
env_dir=${VLAT_ENV_DIR:-.venv-lock}
rm -rf "$env_dir"
"${PYTHON:-python}" -m venv "$env_dir"
"$env_dir/bin/python" -m pip install -q --upgrade pip
VLAT_DEPS=newest PYTHON="$env_dir/bin/python" bash scripts/install.sh
{
  echo "# The exact dependency set the suite passed with; scripts/install.sh installs it by default."
  echo "# Made by scripts/lock.sh on $(date -u +%Y-%m-%d) with $("$env_dir/bin/python" -V) on $(uname -m)."
  "$env_dir/bin/python" -m pip freeze --exclude-editable | grep -vE '^(pip|setuptools|wheel)=='
} > requirements/lock.txt.new
mv requirements/lock.txt.new requirements/lock.txt
rm -rf "$env_dir"
echo "requirements/lock.txt: $(grep -cv '^#' requirements/lock.txt) packages"
