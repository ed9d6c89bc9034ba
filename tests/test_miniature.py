"""examples/miniature.py: the paper's experiment in miniature. The --tiny variant runs end to end here; what is
asserted is what its numbers mean: every cell holds the questions of its length and no other, a deaf control is at
chance, the base model hears 30 s but not 2 minutes, the RoPE methods change positions, VLAT's factors reach them,
and the claims' intervals are the paired ones recomputed from the predictions. Not which method wins."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
from test_train import scalars

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "examples"))

import miniature  # noqa: E402

from vlat.testing.synth_data import QUESTIONS  # noqa: E402

Q = len(QUESTIONS)  # questions per recording


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


def _preds(path):
    return [json.loads(x) for x in path.read_text().splitlines()]


@pytest.mark.slow
def test_tiny_miniature_cells_hold_their_length(tiny_miniature):
    out, _ = tiny_miniature
    summary = json.loads((out / "miniature.json").read_text())
    plan = miniature.TINY
    t1 = summary["table1"]
    original = t1["anchors"]["original"]
    assert original["window_min"] == 0.5 and t1["observed_window_min"] in plan.lengths
    for anchor in t1["anchors"].values():
        if "same_as" in anchor:
            continue
        cells = {(c["method"], c["length_min"]): c for c in anchor["cells"]}
        stretched = {x for x in plan.lengths if x > anchor["window_min"]}
        expected = {(m, x) for m in miniature.TABLE1_METHODS if m != "partial_yarn" for x in plan.lengths}
        assert set(cells) == expected | {("partial_yarn", x) for x in stretched}
        for (_method, length), c in cells.items():  # recordings x Q questions, all exactly of this length
            assert (c["questions"], c["recordings"]) == (Q * plan.test_recordings, plan.test_recordings), c
            assert c["duration_s_min"] == c["duration_s_max"] == 60 * length, c
            assert c["ci95_low"] <= c["accuracy"] <= c["ci95_high"]
        for s in anchor["partial_yarn_settings"].values():
            assert s["cutoff_dim"] in plan.cutoffs and s["temperature"] in plan.temperatures
    for r in summary["table2"]["pooled"]:  # pooled over seeds: seeds x recordings x 5
        assert r["questions"] == Q * plan.test_recordings * len(plan.seeds), r
        assert r["duration_s_min"] == r["duration_s_max"] == 60 * r["length_min"]
    listeners = summary["listeners"]
    assert set(listeners) == {f"{x:g}" for x in plan.lengths}
    for cell in listeners.values():
        assert cell["whole"]["accuracy"] == 1.0 and cell["chance"]["accuracy"] == 0.25
        assert cell["whole"]["questions"] == Q * plan.test_recordings


@pytest.mark.slow
def test_tiny_miniature_controls(tiny_miniature):
    out, _ = tiny_miniature
    summary = json.loads((out / "miniature.json").read_text())
    base = summary["base_model"]["accuracy_30s"]
    assert base >= 0.9  # the base model hears 30 s ...
    deaf = summary["deaf_control"]  # ... and without the audio it is at chance
    assert deaf["questions"] == Q * miniature.TINY.deaf_recordings
    assert deaf["ci95_low"] <= 0.25 <= deaf["ci95_high"] and deaf["accuracy"] < 0.45, deaf
    vanilla = {
        c["length_min"]: c for c in summary["table1"]["anchors"]["original"]["cells"] if c["method"] == "vanilla"
    }
    longest = max(miniature.TINY.lengths)
    assert vanilla[0.5]["accuracy"] >= 0.8  # the 30-s test recordings
    assert vanilla[longest]["accuracy"] < base, vanilla[longest]  # 2 minutes is beyond what it learnt
    # the RoPE methods change the positions: on long audio, predictions differ from vanilla's
    preds = _preds(out / "table1" / "original_30s" / "predictions.jsonl")
    by = {(p["method"], p["id"]): p["prediction"] for p in preds if p["length"] > 0.5}
    for method in ("partial_pi", "whole_pi"):
        assert any(by[method, i] != by["vanilla", i] for m, i in by if m == "vanilla"), method


@pytest.mark.slow
def test_tiny_miniature_claims_are_the_recomputed_paired_intervals(tiny_miniature):
    from vlat.evaluation.stats import paired_difference

    out, _ = tiny_miniature
    summary = json.loads((out / "miniature.json").read_text())
    claims = {c["name"]: c for c in summary["claims"]}
    c = claims["Partial PI beats vanilla at 2 min"]
    preds = _preds(out / "table1" / "original_30s" / "predictions.jsonl")
    at = {(p["method"], p["id"]): p for p in preds if p["length"] == 2.0}
    diff, sizes = {}, {}
    for (method, qid), p in at.items():
        if method == "partial_pi":
            d = int(p["correct"]) - int(at["vanilla", qid]["correct"])
            diff[p["recording"]] = diff.get(p["recording"], 0) + d
            sizes[p["recording"]] = sizes.get(p["recording"], 0) + 1
    iv = paired_difference(list(diff.values()), list(sizes.values()))
    r = c["result"]
    assert (r["difference"], r["ci95_low"], r["ci95_high"]) == pytest.approx((iv.estimate, iv.low, iv.high))
    expected = "shown" if iv.low > 0 else "opposite shown" if iv.high < 0 else "not shown"
    assert c["verdict"] == expected and r["questions"] == Q * miniature.TINY.test_recordings
    assert any(n.startswith("VLAT (default) beats vanilla fine-tuning at 2 min") for n in claims)


@pytest.mark.slow
def test_tiny_miniature_files(tiny_miniature):
    out, _ = tiny_miniature
    summary = json.loads((out / "miniature.json").read_text())
    plan = miniature.TINY
    agg = summary["table2"]["aggregate"]
    cells = {(a["strategy"], a["method"], a["length_min"]) for a in agg}
    assert cells == {(s, m, x) for s in plan.strategies for m in ("vanilla", "partial_pi") for x in plan.table2_lengths}
    assert all(a["seeds"] == len(plan.seeds) and a["std"] is not None for a in agg)
    for name in ("miniature.md", "table2/comparison.md", "table2/accuracy_vs_length.png"):
        assert (out / name).stat().st_size > 0, name
    md = (out / "miniature.md").read_text()
    for text in ("Table 1", "Stretching from 30 s", "default_per_sample", "Reference listeners", "Deaf control"):
        assert text in md, text
    assert len(summary["commands"]) == len(list((out / "stages").glob("*.json")))


@pytest.mark.slow
def test_tiny_miniature_per_sample_factors_reach_training(tiny_miniature):
    out, _ = tiny_miniature
    runs = out / "table2" / "runs"
    per_batch = scalars(runs / "default_seed0", "vlat/virtual_factor")
    per_sample = scalars(runs / "default_per_sample_seed0", "vlat/virtual_factor")
    factors = {1.0, 5.0, 10.0, 15.0, 20.0, 25.0}
    assert per_batch and set(per_batch.values()) <= factors  # one factor of the set per batch
    assert any(v not in factors for v in per_sample.values())  # the mean of 4 samples' own factors


@pytest.mark.slow
def test_tiny_miniature_resumes_without_redoing(tiny_miniature):
    out, cmd = tiny_miniature
    before = (out / "miniature.json").read_text()
    docs = out.parent / "page.md"
    res = subprocess.run([*cmd, "--docs", str(docs)], capture_output=True, text=True, cwd=ROOT)
    assert res.returncode == 0, res.stderr[-3000:]
    page = docs.read_text()  # the docs page, from this run's numbers
    assert "What the miniature shows" in page and "python examples/miniature.py" in page
    assert f"{100 * json.loads(before)['base_model']['accuracy_30s']:.1f}%" in page
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
