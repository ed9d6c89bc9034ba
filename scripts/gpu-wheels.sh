#!/usr/bin/env bash
# Download, on a machine with a package registry, the wheels bench/gpu_suite.py needs on the GPU machine, which has
# no registry: its image holds torch 2.11, transformers 5.17 (below this project's floor), an older
# huggingface_hub, and no soundfile, soxr, jsonargparse or liger-kernel (device README, KINDS.md).
#
#   bash scripts/gpu-wheels.sh [DIR]      # default .gpu-wheels/ (git-ignored; carried to the GPU machine)
#
# For CPython 3.12 on x86-64 Linux, at the versions of requirements/lock.txt (liger-kernel: the fast extra). The
# suite's first lines install them there with `pip install --no-index --no-deps --target .gpu-wheels/site` and put
# that directory first on the path. The transfer limit is 64 MiB: the total is checked.
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-.gpu-wheels}
# what the image lacks or holds too old, and what those need that it lacks (huggingface_hub 2 speaks httpx2)
pkgs=(transformers huggingface_hub httpx2 httpcore2 truststore hf-xet click typer kernels tomlkit peft
  soundfile cffi pycparser soxr jsonargparse docstring_parser typeshed_client)
specs=()
for p in "${pkgs[@]}"; do
  pattern="^$(echo "$p" | sed 's/[-_]/[-_]/g')=="
  line=$(grep -iE "$pattern" requirements/lock.txt | head -1 || true)
  if [ -z "$line" ]; then
    echo "scripts/gpu-wheels.sh: $p is not in requirements/lock.txt" >&2
    exit 2
  fi
  specs+=("$line")
done
specs+=("liger-kernel==0.8.5")
rm -rf "$out"
mkdir -p "$out"
python -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp --abi cp312 \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
  -d "$out" "${specs[@]}"
bytes=$(du -cb "$out"/*.whl | tail -1 | cut -f1)
echo "$(ls "$out"/*.whl | wc -l) wheels, $((bytes / 1048576)) MiB in $out"
if [ "$bytes" -gt $((64 * 1048576)) ]; then
  echo "scripts/gpu-wheels.sh: over the 64-MiB transfer limit" >&2
  exit 1
fi
