"""The offline base model that hears (clips <= 30 s), and the quick start that fine-tunes it: learning is asserted."""

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from test_train import scalars

from vlat.testing.base_model import RECORD, BaseModelConfig, train_base_model

ROOT = Path(__file__).resolve().parents[1]


def _val(run: Path) -> dict[str, dict[int, float]]:
    return {tag: scalars(run, tag) for tag in ("val/acc_0_5min", "val/acc_1min", "val/acc_2min")}


def _run_script(cwd: Path, script: str, *args: str) -> None:
    """``script`` on the quick start's base model and smoke data, from its directory; it must succeed."""
    cmd = [sys.executable, str(ROOT / script), "--model", ".smoke/base-model", "--data", ".smoke/synth-data", *args]
    res = subprocess.run([*cmd, "--no-progress"], cwd=cwd, capture_output=True, text=True)
    assert res.returncode == 0, res.stderr[-3000:]


@pytest.mark.slow
def test_base_model_hears_30_s(quick_start):
    record = json.loads((quick_start / ".smoke" / "base-model" / RECORD).read_text())
    assert record["accuracy_30s"] >= 0.9, record  # 200 held-out questions about fresh 30-s clips
    assert set(record["accuracy_30s_per_kind"]) == {"marker", "pitch"}
    assert record["config"]["clip_seconds"] and max(record["config"]["clip_seconds"]) <= 30.0


@pytest.mark.slow
def test_quick_start_learns_and_inference_methods_differ(quick_start, tmp_path):
    # the smoke run (VLAT on 0.5-2 min clips from the base model) validates clearly above chance (4 options)
    run = quick_start / "runs" / "smoke"
    for tag, by_step in _val(run).items():
        assert by_step, tag
        final = by_step[max(by_step)]
        assert final >= 0.6, (tag, by_step)

    # evaluating its adapter: vanilla and Partial PI positions give different answers at 2 minutes
    out = tmp_path / "eval"
    adapter = str(run / "checkpoints" / "last.ckpt")
    _run_script(
        quick_start,
        "evaluate.py",
        "--adapter",
        adapter,
        "--methods",
        "vanilla,partial_pi",
        "--lengths",
        "2",
        "--output",
        str(out),
    )
    preds = [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]
    by_method: dict[str, dict[str, int]] = {}
    for p in preds:
        by_method.setdefault(p["method"], {})[p["id"]] = p["prediction"]
    assert set(by_method) == {"vanilla", "partial_pi"} and len(by_method["vanilla"]) == 16
    assert by_method["vanilla"] != by_method["partial_pi"]


def test_deterministic_for_a_seed():
    quick = dict(tower_steps=2, steps=2, eval_recordings=1, recordings_per_step=1, text_rows=1)
    a, _, rec_a = train_base_model(BaseModelConfig(**quick), progress=lambda m: None)
    b, _, rec_b = train_base_model(BaseModelConfig(**quick), progress=lambda m: None)
    c, _, _ = train_base_model(BaseModelConfig(**quick, seed=1), progress=lambda m: None)
    sa, sb, sc = a.state_dict(), b.state_dict(), c.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert rec_a["final_loss"] == rec_b["final_loss"]
    assert not all(torch.equal(sa[k], sc[k]) for k in sa)


def test_cli_bad_input_is_one_line_before_training(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a dir")
    for args in (["--steps", "0", str(tmp_path / "m")], [str(blocker / "sub")]):
        res = subprocess.run(
            [sys.executable, "-m", "vlat.testing", "base-model", *args], capture_output=True, text=True, timeout=120
        )
        assert res.returncode == 2, res.stderr
        assert res.stderr.strip().count("\n") == 0 and "Traceback" not in res.stderr
    assert not (tmp_path / "m").exists()


@pytest.mark.slow
def test_quick_start_sweep_cells_differ(quick_start, tmp_path):
    # a Partial YaRN grid over the smoke adapter at 2 minutes: the settings change the answers (not one flat value)
    out = tmp_path / "sweep"
    _run_script(
        quick_start,
        "sweep.py",
        "--adapter",
        "runs/smoke/checkpoints/last-adapter",
        "--split",
        "test",
        "--length",
        "2",
        "--cutoffs",
        "8,4,2",
        "--temperatures",
        "0.6,1.0,1.4",
        "--output",
        str(out),
    )
    grid = json.loads((out / "sweep.json").read_text())
    assert grid["questions"] == 16
    assert len({a for row in grid["accuracy"] for a in row}) > 1, grid["accuracy"]


@pytest.mark.slow
def test_the_quick_start_checkpoint_resumes_past_its_first_data_pass(quick_start, tmp_path):
    """`--ckpt_path last` on the quick start's own run (step 60, a pass is about 34 steps): it goes on from the
    pass it was in instead of closing an empty pass 0."""
    import os
    import shutil

    os.symlink(quick_start / ".smoke", tmp_path / ".smoke")
    shutil.copytree(quick_start / "runs" / "smoke" / "checkpoints", tmp_path / "runs" / "smoke" / "checkpoints")
    last = tmp_path / "runs" / "smoke" / "checkpoints" / "last.ckpt"
    saved = torch.load(last, weights_only=True)
    assert saved["global_step"] == 60 and saved["vlat_data_pass"]["pass"] >= 1
    cmd = [sys.executable, str(ROOT / "train.py"), "--config", str(ROOT / "configs" / "smoke.yaml")]
    extra = ["--ckpt_path", "last", "--trainer.max_steps", "62", "--trainer.limit_val_batches", "0"]
    extra += ["--trainer.log_every_n_steps", "1"]
    res = subprocess.run([*cmd, *extra], cwd=tmp_path, capture_output=True, text=True)
    assert res.returncode == 0 and "no usable training sample" not in res.stderr, res.stderr[-3000:]
    assert {60, 61} <= set(scalars(tmp_path / "runs" / "smoke", "train/loss"))  # steps 61 and 62 trained
    assert re.search(r"step\s+\S+ 62/62 ", res.stdout)
