import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from vlat.evaluation.compare import aggregate_seeds, parse_strategy, run_config

ROOT = Path(__file__).resolve().parents[1]


def test_run_config_and_seed_aggregation(tmp_path):
    base = yaml.safe_load((ROOT / "configs" / "vlat_default.yaml").read_text())
    vanilla = run_config(base, "vanilla", 3, tmp_path / "r")
    assert vanilla["model"]["rope_method"] == "vanilla" and vanilla["seed_everything"] == 3
    assert not any(c["class_path"].endswith("VirtualLongformCallback") for c in vanilla["trainer"]["callbacks"])
    limited = run_config(yaml.safe_load((ROOT / "configs" / "vanilla_ft.yaml").read_text()), "limited", 1, tmp_path)
    assert limited["model"]["rope_method"] == "partial_pi"
    assert limited["trainer"]["callbacks"][0]["init_args"] == {"strategy": "limited", "seed": 1}
    per_sample = run_config(base, "dense_per_sample", 2, tmp_path / "p")
    assert per_sample["trainer"]["callbacks"][0]["init_args"] == {"strategy": "dense", "seed": 2, "per_sample": True}
    assert parse_strategy("fixed") == ("fixed", False) and parse_strategy("fixed_per_sample") == ("fixed", True)
    for bad in ("vanilla_per_sample", "wide", "default_per_batch"):
        with pytest.raises(ValueError, match=f"--strategies: '{bad}' is not one of"):
            parse_strategy(bad)
    rows = [{"strategy": "default", "method": "partial_pi", "length_min": 2.0, "accuracy": a} for a in (0.5, 0.7, 0.9)]
    (agg,) = aggregate_seeds(rows)
    assert agg["seeds"] == 3 and abs(agg["mean"] - 0.7) < 1e-12 and abs(agg["std"] - 0.2) < 1e-12


def test_compare_trains_evaluates_and_resumes(tmp_path, tiny_model_dir, synth_dir):
    base = yaml.safe_load((ROOT / "configs" / "smoke.yaml").read_text())
    base["model"]["model_name_or_path"] = str(tiny_model_dir)
    base["data"].update(source=str(synth_dir), num_workers=0)
    base["trainer"].update(max_steps=2, limit_val_batches=0)
    base_path = tmp_path / "base.yaml"
    base_path.write_text(yaml.safe_dump(base))
    out = tmp_path / "cmp"
    cmd = [
        sys.executable,
        str(ROOT / "compare.py"),
        "--base-config",
        str(base_path),
        "--strategies",
        "limited,vanilla",
        "--seeds",
        "0,1",
        "--lengths",
        "0.5,1.25",
        "--original-audio-seconds",
        "20",
        "--max-questions",
        "10",
        "--output",
        str(out),
    ]
    first = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
    assert first.returncode == 0, first.stderr[-3000:]
    assert first.stdout.count("training") == 4
    summary = json.loads((out / "comparison.json").read_text())
    agg = summary["aggregate"]
    assert {(a["strategy"], a["method"], a["length_min"]) for a in agg} == {
        (s, m, x) for s in ("limited", "vanilla") for m in ("vanilla", "partial_pi") for x in (0.5, 1.25)
    }
    assert all(a["seeds"] == 2 for a in agg)
    assert (out / "accuracy_vs_length.png").read_bytes()[:4] == b"\x89PNG"
    table = (out / "comparison.md").read_text()
    assert "| limited |" in table and " ± " in table
    # the questions pooled over seeds, with intervals; limited minus vanilla fine-tuning on the same questions
    doc = json.loads((out / "comparison.json").read_text())
    pooled = {(r["strategy"], r["method"], r["length_min"]): r for r in doc["pooled"]}
    paired = {(r["method"], r["length_min"]): r for r in doc["paired_vs_vanilla"]}
    assert set(paired) == {(m, x) for m in ("vanilla", "partial_pi") for x in (0.5, 1.25)}
    assert {r["strategy"] for r in doc["paired_vs_vanilla"]} == {"limited"}

    def answered(strategy, method, length):
        files = [out / "runs" / f"{strategy}_seed{seed}" / "eval" / "predictions.jsonl" for seed in (0, 1)]
        ps = [json.loads(x) for f in files for x in f.read_text().splitlines()]
        return [p for p in ps if (p["method"], p["length"]) == (method, length)]

    for (method, length), r in paired.items():
        a, b = answered("limited", method, length), answered("vanilla", method, length)
        assert r["questions"] == len(a) == len(b) == pooled["limited", method, length]["questions"]
        right_a, right_b = sum(p["correct"] for p in a), sum(p["correct"] for p in b)
        assert r["difference"] == pytest.approx((right_a - right_b) / len(a))
        assert pooled["limited", method, length]["accuracy"] == pytest.approx(right_a / len(a))
    assert "Each strategy minus vanilla fine-tuning" in table and "pooled over seeds" in table
    ckpt = out / "runs" / "limited_seed1" / "checkpoints" / "last.ckpt"
    stamp = ckpt.stat().st_mtime_ns
    second = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
    assert second.returncode == 0 and second.stdout.count("done, reusing") == 4 and "training" not in second.stdout
    assert ckpt.stat().st_mtime_ns == stamp
    assert json.loads((out / "comparison.json").read_text())["aggregate"] == agg

    # changed training arguments: that run is trained again (the old one kept); one seed: no "± 0.00"
    one = [*cmd[: cmd.index("--strategies")], "--strategies", "limited", "--seeds", "0", *cmd[cmd.index("--lengths") :]]
    third = subprocess.run([*one, "--", "--trainer.max_steps", "3"], capture_output=True, text=True, cwd=ROOT)
    assert third.returncode == 0, third.stderr[-3000:]
    assert "limited_seed0: training arguments changed" in third.stdout
    assert (out / "runs" / "limited_seed0.stale-1" / "done.json").exists()
    assert (
        torch.load(out / "runs" / "limited_seed0" / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] == 3
    )
    single = (out / "comparison.md").read_text()
    assert "| limited |" in single and "±" not in single.split("\n", 2)[2]

    # changed evaluation settings (another length): the finished run is evaluated again, not trained again
    fourth = [*one[: one.index("--lengths")], "--lengths", "0.5", *one[one.index("--lengths") + 2 :]]
    res = subprocess.run([*fourth, "--", "--trainer.max_steps", "3"], capture_output=True, text=True, cwd=ROOT)
    assert res.returncode == 0, res.stderr[-3000:]
    assert "limited_seed0: evaluation settings changed" in res.stdout and "done, reusing" in res.stdout
    rows = json.loads((out / "runs" / "limited_seed0" / "eval" / "results.json").read_text())["results"]
    assert {r["length_min"] for r in rows} == {0.5}
    assert all(line.endswith(",") for line in (out / "comparison.csv").read_text().splitlines()[1:])


def test_compare_evaluates_under_the_trained_compression(tmp_path, tiny_model_dir, synth_dir):
    """A base config that trains on pooled audio is evaluated on pooled audio (30 s: 375 tokens, 75 s: 938)."""
    base = yaml.safe_load((ROOT / "configs" / "smoke.yaml").read_text())
    base["model"].update(model_name_or_path=str(tiny_model_dir), audio_compression="pool:2")
    base["data"].update(source=str(synth_dir), num_workers=0)
    base["trainer"].update(max_steps=1, limit_val_batches=0)
    base_path = tmp_path / "base.yaml"
    base_path.write_text(yaml.safe_dump(base))
    out = tmp_path / "cmp"
    res = subprocess.run(
        [
            sys.executable,
            str(ROOT / "compare.py"),
            "--base-config",
            str(base_path),
            "--strategies",
            "vanilla",
            "--seeds",
            "0",
            "--lengths",
            "0.5,1.25",
            "--output",
            str(out),
        ],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    assert res.returncode == 0, res.stderr[-3000:]
    rows = json.loads((out / "runs" / "vanilla_seed0" / "eval" / "results.json").read_text())["results"]
    assert {r["compression"] for r in rows} == {"pool:2"}
    assert {r["length_min"]: r["audio_tokens_mean"] for r in rows} == {0.5: 375, 1.25: 938}
