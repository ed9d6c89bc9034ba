import json
import subprocess
import sys
from pathlib import Path

import numpy as np

from vlat.evaluation import EvalSpec, Evaluator
from vlat.evaluation.sweep import run_sweep
from vlat.rope import find_audio_model
from vlat.testing.synth_data import QUESTIONS

ROOT = Path(__file__).resolve().parents[1]


def _evaluator(tiny_model_dir, synth_dir, **spec) -> Evaluator:
    """The sweep's evaluator over the 75-s recordings (bucket 1.25 min), window 20 s."""
    return Evaluator(
        EvalSpec(
            model=str(tiny_model_dir),
            data=str(synth_dir),
            methods=["partial_yarn"],
            original_audio_seconds=20,
            lengths=[1.25],
            dtype="float32",
            attn_implementation="sdpa",
            **spec,
        )
    )


def test_grid_reuses_one_audio_encoding_per_recording(tiny_model_dir, synth_dir):
    ev = _evaluator(tiny_model_dir, synth_dir)
    calls = []
    find_audio_model(ev.model).audio_tower.register_forward_hook(lambda *a: calls.append(1))
    result = run_sweep(ev, 1.25, [0, 4, 8], [0.8, 1.0, 1.6], progress=False)
    recordings = {r.recording_id for g in ev.recordings() for r in g if r.duration == 75.0}
    assert len(calls) == len(recordings) and result["questions"] == len(QUESTIONS) * len(recordings)
    acc = np.array(result["accuracy"])
    assert acc.shape == (3, 3) and ((acc >= 0) & (acc <= 1)).all()
    i, j = np.unravel_index(acc.argmax(), acc.shape)
    best = {k: v for k, v in result["best"].items() if k != "ci95"}
    assert best == {"cutoff_dim": [0, 4, 8][i], "temperature": [0.8, 1.0, 1.6][j], "accuracy": acc[i, j]}
    assert result["best"]["ci95"][0] <= acc[i, j] <= result["best"]["ci95"][1]


def test_sweep_cli_writes_heatmap(tmp_path, tiny_model_dir, synth_dir):
    out = tmp_path / "sweep"
    res = subprocess.run(
        [
            sys.executable,
            str(ROOT / "sweep.py"),
            "--model",
            str(tiny_model_dir),
            "--data",
            str(synth_dir),
            "--length",
            "0.5",
            "--original-audio-seconds",
            "20",
            "--cutoffs",
            "0,6",
            "--temperatures",
            "1.0,1.5",
            "--output",
            str(out),
            "--no-progress",
        ],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    assert res.returncode == 0, res.stderr[-3000:]
    assert (out / "heatmap.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    result = json.loads((out / "sweep.json").read_text())
    assert result["cutoffs"] == [0, 6] and result["temperatures"] == [1.0, 1.5] and "best" in result
    acc, best = np.array(result["accuracy"]), result["best"]["accuracy"]
    want = [{"cutoff_dim": c, "temperature": t} for i, c in enumerate([0, 6]) for j, t in enumerate([1.0, 1.5])
            if acc[i, j] == best]  # fmt: skip
    assert result["tied"] == want and {k: result["best"][k] for k in want[0]} == want[0]
    assert res.stdout.startswith("tie: ") == (len(want) > 1)
    # every tied setting is (trivially) indistinguishable from the best; the best's interval holds its accuracy
    alike = [{k: a[k] for k in ("cutoff_dim", "temperature")} for a in result["indistinguishable_from_best"]]
    assert all(w in alike for w in want) and result["recordings"] >= 1
    assert all(a["difference"] <= 0 for a in result["indistinguishable_from_best"])
    low, high = result["best"]["ci95"]
    assert low <= best <= high
    assert f"{len(alike)} of 4 settings are not distinguishable from the best" in res.stdout
    assert len((out / "sweep.csv").read_text().splitlines()) == 1 + 4
    bad = subprocess.run(
        [
            sys.executable,
            str(ROOT / "sweep.py"),
            "--model",
            str(tiny_model_dir),
            "--data",
            str(synth_dir),
            "--length",
            "0.5",
            "--cutoffs",
            "0,64",
            "--output",
            str(tmp_path / "x"),
            "--no-progress",
        ],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    assert bad.returncode == 2 and "cutoff_dim: 64 is outside [0, 8]" in bad.stderr and not (tmp_path / "x").exists()
    assert "Loading weights" not in bad.stderr  # the grid is checked against config.json before the model loads
    missing = [*bad.args[:3], str(tmp_path / "no-model"), *bad.args[4:]]
    res = subprocess.run(missing, capture_output=True, text=True, cwd=ROOT)
    assert res.returncode == 2 and res.stderr.strip().splitlines() == [
        f"sweep.py: error: --model {tmp_path / 'no-model'}: no such directory (and not a hub id)"
    ]


def test_sweep_under_compression(tiny_model_dir, synth_dir):
    ev = _evaluator(tiny_model_dir, synth_dir, compressions=["ltbm:0.5"])
    lengths = []
    hook = find_audio_model(ev.model).language_model.register_forward_pre_hook(
        lambda m, a, k: lengths.append(k["inputs_embeds"].shape[1]), with_kwargs=True
    )
    result = run_sweep(ev, 1.25, [0, 4], [1.0, 1.4], progress=False)
    hook.remove()
    assert result["audio_compression"] == "ltbm:0.5" and np.array(result["accuracy"]).shape == (2, 2)
    # prefixes hold 938 audio tokens (375 + 375 + 188), not 1875: the longest forward is the prefix prefill
    assert 938 < max(lengths) < 1875
