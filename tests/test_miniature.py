"""examples/miniature.py: the paper's experiment in miniature. The --tiny variant runs end to end here; what is
asserted is its outputs (files, table shapes, the base model hearing 30 s), not which method wins."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
from test_train import scalars

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "examples"))

import miniature  # noqa: E402


def test_observed_window_by_hand():
    # vanilla holds within 0.1 of its 30-s accuracy up to 2 min, then drops: the observed window is 2 min
    assert miniature.observed_window({0.5: 0.95, 1.0: 0.9, 2.0: 0.86, 5.0: 0.5}, 0.1) == 2.0
    # the first drop ends the window even if a longer length recovers by chance
    assert miniature.observed_window({0.5: 0.95, 1.0: 0.8, 2.0: 0.9}, 0.1) == 0.5
    assert miniature.observed_window({0.5: 0.95, 1.0: 0.8}, 0.2) == 1.0


def test_stage_reruns_when_its_inputs_change(tmp_path, capsys):
    result = tmp_path / "result.txt"
    argv = [
        "-c",
        f"import pathlib; p = pathlib.Path({str(result)!r}); p.write_text(p.read_text() + 'x' if p.exists() else 'x')",
    ]
    miniature.Runner(tmp_path, {"base_model": {"steps": 600}}).run("s", argv, result)
    miniature.Runner(tmp_path, {"base_model": {"steps": 600}}).run("s", argv, result)
    assert result.read_text() == "x" and "s: done, reusing" in capsys.readouterr().out
    miniature.Runner(tmp_path, {"base_model": {"steps": 450}}).run("s", argv, result)  # another base model
    miniature.Runner(tmp_path, {"base_model": {"steps": 450}}).run("s", argv, result, inputs="config v2")
    assert result.read_text() == "xxx"
    result.unlink()  # finished, but its output is gone: run again
    miniature.Runner(tmp_path, {"base_model": {"steps": 450}}).run("s", argv, result, inputs="config v2")
    assert result.read_text() == "x"
    with pytest.raises(RuntimeError, match="stage bad failed"):
        miniature.Runner(tmp_path, {}).run("bad", ["-c", "raise SystemExit(3)"], result)


def test_datasets_split_videos_for_test_and_validation(tmp_path):
    from vlat.testing.synth_data import write_synth_dataset

    cfg = miniature.datasets(miniature.TINY)["eval"]
    out = write_synth_dataset(tmp_path / "eval", cfg)
    rows = {
        split: [json.loads(line) for line in (out / f"{split}.jsonl").read_text().splitlines()]
        for split in ("test", "validation", "train")
    }
    plan = miniature.TINY
    for split, recordings in (("test", plan.test_recordings), ("validation", plan.validation_recordings)):
        per_length = {}
        for r in rows[split]:
            per_length.setdefault(r["duration"], set()).add(r["segment_id"])
        assert {d: len(s) for d, s in per_length.items()} == {60 * m: recordings for m in plan.lengths}
    assert not rows["train"]
    videos = {s: {r["video_id"] for r in rs} for s, rs in rows.items()}
    assert not videos["test"] & videos["validation"]


@pytest.fixture(scope="module")
def tiny_miniature(quick_start, tmp_path_factory):
    """``--tiny`` on the quick start's base model (trained on <= 30-s clips), as the docs' command runs it."""
    out = tmp_path_factory.mktemp("miniature") / "out"
    cmd = [sys.executable, str(ROOT / "examples" / "miniature.py"), "--output", str(out), "--tiny"]
    cmd += ["--base-model", str(quick_start / ".smoke" / "base-model")]
    res = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    return out, cmd


def test_tiny_miniature_tables(tiny_miniature):
    out, _ = tiny_miniature
    summary = json.loads((out / "miniature.json").read_text())
    plan = miniature.TINY
    lengths = {str(m) for m in plan.lengths}  # minutes as JSON keys
    # the base model hears 30 s: its own held-out figure, and the miniature's 30-s test bucket under vanilla
    assert summary["base_model"]["accuracy_30s"] >= 0.9
    t1 = summary["table1"]
    original = t1["anchors"]["original"]
    assert original["window_min"] == 0.5
    assert original["test_questions"] == {k: 5 * plan.test_recordings for k in lengths}
    assert original["accuracy"]["vanilla"]["0.5"] >= 0.7  # 20 questions about 30-s test recordings
    for anchor in t1["anchors"].values():
        if "same_as" in anchor:
            continue
        assert set(anchor["accuracy"]) == set(miniature.TABLE1_METHODS)
        for method, row in anchor["accuracy"].items():
            assert set(row) == lengths and all(0 <= v <= 1 for v in row.values()), method
        swept = {float(k) for k in anchor["partial_yarn_settings"]}
        assert swept == {m for m in plan.lengths if m > anchor["window_min"]}
        for s in anchor["partial_yarn_settings"].values():
            assert s["cutoff_dim"] in plan.cutoffs and s["temperature"] in plan.temperatures
    assert t1["observed_window_min"] in plan.lengths
    assert set(t1["validation_vanilla"]) == lengths

    agg = summary["table2"]["aggregate"]
    cells = {(a["strategy"], a["method"], a["length_min"]) for a in agg}
    assert cells == {(s, m, x) for s in plan.strategies for m in ("vanilla", "partial_pi") for x in plan.table2_lengths}
    assert all(a["seeds"] == len(plan.seeds) and a["std"] is not None for a in agg)
    for name in ("miniature.md", "table2/comparison.md", "table2/accuracy_vs_length.png"):
        assert (out / name).stat().st_size > 0, name
    md = (out / "miniature.md").read_text()
    assert "Table 1" in md and "Stretching from 30 s" in md and "default_per_sample" in md
    assert len(summary["commands"]) == len(list((out / "stages").glob("*.json")))


def test_tiny_miniature_per_sample_factors_reach_training(tiny_miniature):
    out, _ = tiny_miniature
    runs = out / "table2" / "runs"
    per_batch = scalars(runs / "default_seed0", "vlat/virtual_factor")
    per_sample = scalars(runs / "default_per_sample_seed0", "vlat/virtual_factor")
    factors = {1.0, 5.0, 10.0, 15.0, 20.0, 25.0}
    assert per_batch and set(per_batch.values()) <= factors  # one factor of the set per batch
    assert any(v not in factors for v in per_sample.values())  # the mean of 4 samples' own factors


def test_tiny_miniature_resumes_without_redoing(tiny_miniature):
    out, cmd = tiny_miniature
    before = (out / "miniature.json").read_text()
    res = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
    assert res.returncode == 0, res.stderr[-3000:]
    stages = len(list((out / "stages").glob("*.json")))
    assert res.stdout.count("done, reusing") == stages, res.stdout
    after = json.loads((out / "miniature.json").read_text())
    assert after["table1"] == json.loads(before)["table1"] and after["table2"] == json.loads(before)["table2"]


def test_bad_base_model_is_one_line(tmp_path):
    res = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "miniature.py"), "--output", str(tmp_path / "o"), "--base-model",
         str(tmp_path)],
        capture_output=True, text=True, cwd=ROOT,
    )  # fmt: skip
    assert res.returncode == 2
    assert res.stderr.strip().splitlines()[-1].startswith(f"miniature.py: error: --base-model {tmp_path}: no ")
