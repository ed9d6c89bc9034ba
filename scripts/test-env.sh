#!/usr/bin/env bash
# Run tests in a fresh virtual environment on one dependency set, apart from the environment in use.
#
#   bash scripts/test-env.sh oldest [pytest args]   the floors pyproject.toml allows (requirements/oldest.txt)
#   bash scripts/test-env.sh newest [pytest args]   the newest releases on the registry, upper bounds lifted:
#                                                   run this before raising a bound (README, "Supported versions")
#
# pytest args default to `-m seam`: the tests of the code that touches the libraries' internals (RoPE seam, decoding
# with a cache, shared-prefix scoring and generation, compression, checkpoints, one train.py and one evaluate.py run).
# torch stays at the locked version in both (a newer CPU build is not on every index; an unpinned one is CUDA's).
# The environment is made anew in ${VLAT_ENV_DIR:-.venv-<set>}; the versions it got are printed first.
set -euo pipefail
cd "$(dirname "$0")/.."
set_name=${1:?usage: scripts/test-env.sh oldest|newest [pytest args]}
shift
[ $# -gt 0 ] || set -- -m seam
env_dir=${VLAT_ENV_DIR:-.venv-$set_name}
PY=${PYTHON:-python}
torch_pin=$(grep '^torch==' requirements/lock.txt | sed 's/+.*//')
rm -rf "$env_dir"
"$PY" -m venv "$env_dir"
vpy="$env_dir/bin/python"
"$vpy" -m pip install -q --upgrade pip
"$vpy" -m pip install -q "$torch_pin"
case "$set_name" in
  oldest)
    "$vpy" -m pip install -q -e ".[dev]" -c requirements/oldest.txt
    ;;
  newest)
    # every dependency of pyproject.toml with its upper bound lifted: the newest release the registry has
    unbounded=$("$PY" - <<'PYEOF'
import re, tomllib
deps = tomllib.load(open("pyproject.toml", "rb"))["project"]["dependencies"]
out = []
for d in deps:
    name = re.match(r"[A-Za-z0-9_.\-\[\]]+", d).group(0)
    out.append(name if name.split("[")[0] != "torch" else "")
print(" ".join(x for x in out if x))
PYEOF
)
    "$vpy" -m pip install -q -e ".[dev]" --no-deps
    # shellcheck disable=SC2086
    "$vpy" -m pip install -q --upgrade $unbounded pytest ruff "$torch_pin"
    ;;
  *) echo "scripts/test-env.sh: unknown set $set_name (oldest or newest)" >&2; exit 2 ;;
esac
"$vpy" -m pip list 2>/dev/null | grep -iE '^(torch|transformers|peft|lightning|datasets|pyarrow|numpy|jsonargparse|huggingface.hub|tokenizers|mistral.common) ' | tr -s ' ' | sed 's/^/  /'
"$vpy" -m pytest "$@"
