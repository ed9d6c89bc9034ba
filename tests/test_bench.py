"""Smoke runs of the benchmark scripts at tiny scale (figures themselves live in docs/benchmarks.md)."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize(
    "script,keys",
    [
        ("rope_overhead.py", ["rope_overhead_whole_yarn", "rope_overhead_partial_yarn"]),
        ("featurize.py", ["featurize_realtime_factor"]),
        ("prefix_eval.py", ["prefix_speedup_1", "prefix_speedup_5"]),
        ("padding.py", ["padding_fraction_random", "padding_fraction_bucketed"]),
    ],
)
def test_bench_script_tiny(tmp_path, script, keys):
    res = subprocess.run(
        [sys.executable, str(ROOT / "bench" / script), "--tiny"],
        capture_output=True,
        text=True,
        env={**__import__("os").environ, "VLAT_BENCH_RESULTS": str(tmp_path)},
    )
    assert res.returncode == 0, res.stderr[-2000:]
    last = res.stdout.strip().splitlines()[-1]
    assert last.split(":")[0] == keys[-1] and float(last.split(":")[1]) > 0
    record = json.loads(next(tmp_path.glob("*.json")).read_text())
    assert all(record[k] > 0 for k in keys) and record["machine"] and record["command"]
