"""evaluate.py and shared-prefix scoring on the tiny offline model + synthetic data."""

import csv
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from vlat.audio import audio_tokens_for_frames, featurize, load_audio
from vlat.collate import MCQACollator
from vlat.evaluation import encode_audio, markdown_table, score_questions
from vlat.prompts import build_mcqa_example, mcqa_prompt_ids
from vlat.rope import AudioRopeConfig, apply_audio_rope
from vlat.scoring import LOGITS_PREFIX, option_token_ids, predict_logits

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def adapter_dir(tiny_model_dir, tmp_path_factory):
    """A PEFT adapter with non-zero random LoRA weights (so it changes predictions), saved as training saves it."""
    from peft import LoraConfig, get_peft_model
    from transformers import Qwen2AudioForConditionalGeneration

    torch.manual_seed(0)
    base = Qwen2AudioForConditionalGeneration.from_pretrained(tiny_model_dir)
    cfg = LoraConfig(r=4, lora_alpha=8, target_modules=r".*language_model.*\.(q_proj|v_proj)", init_lora_weights=False)
    out = tmp_path_factory.mktemp("adapter") / "vlat_default" / "checkpoints" / "last-adapter"
    get_peft_model(base, cfg).save_pretrained(out)
    return out


@pytest.mark.parametrize(
    "cfg",
    [
        AudioRopeConfig("vanilla"),
        AudioRopeConfig("partial_pi", original_audio_tokens=400),
        AudioRopeConfig("partial_yarn", original_audio_tokens=400, cutoff_dim=3, temperature=1.4),
        AudioRopeConfig("whole_yarn", original_audio_tokens=400),
    ],
    ids=lambda c: c.method,
)
def test_shared_prefix_equals_each_question_alone(synth_dir, processor, tiny_model, cfg):
    rows = [json.loads(x) for x in open(synth_dir / "test.jsonl")]
    recs = [r for r in rows if r["audio"] == rows[-1]["audio"]]  # the 5 questions of one 75-s recording
    tok = processor.tokenizer
    apply_audio_rope(tiny_model, cfg)
    try:
        examples = [
            build_mcqa_example(
                processor, str(synth_dir / r["audio"]), r["question"], r["choices"], assistant_prefix=LOGITS_PREFIX
            )
            for r in recs
        ]
        alone = [
            predict_logits(tiny_model, MCQACollator(tok.pad_token_id, "left")([ex]), option_token_ids(tok))[0]
            for ex in examples
        ]
        feats, fmask = featurize(load_audio(synth_dir / recs[0]["audio"]), processor.feature_extractor)
        n_audio = int(audio_tokens_for_frames(fmask.sum(-1)).sum())
        parts = [mcqa_prompt_ids(processor, n_audio, r["question"], r["choices"], LOGITS_PREFIX) for r in recs]
        assert all(p[0] == parts[0][0] for p in parts) and len({tuple(p[1]) for p in parts}) == len(parts)
        assert all(pre + suf == ex["input_ids"].tolist() for (pre, suf), ex in zip(parts, examples, strict=True))
        shared = score_questions(
            tiny_model,
            parts[0][0],
            [p[1] for p in parts],
            encode_audio(tiny_model, feats, fmask),
            option_token_ids(tok),
        )
    finally:
        apply_audio_rope(tiny_model, AudioRopeConfig("vanilla"))
    assert [p.choice for p in shared] == [p.choice for p in alone]
    for s, a in zip(shared, alone, strict=True):
        assert max(abs(x - y) for x, y in zip(s.probs, a.probs, strict=True)) < 1e-5


def evaluate(*args):
    return subprocess.run(
        [sys.executable, str(ROOT / "evaluate.py"), "--no-progress", *map(str, args)],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )


def test_evaluate_writes_all_outputs(tmp_path, tiny_model_dir, synth_dir, adapter_dir):
    out = tmp_path / "eval"
    res = evaluate(
        "--model",
        tiny_model_dir,
        "--adapter",
        adapter_dir,
        "--data",
        synth_dir,
        "--methods",
        "vanilla,partial_pi",
        "--lengths",
        "0.5,1",
        "--original-audio-seconds",
        "20",
        "--output",
        out,
    )
    assert res.returncode == 0, res.stderr[-3000:]
    results = json.loads((out / "results.json").read_text())["results"]
    assert {(r["method"], r["length_min"]) for r in results} == {
        (m, x) for m in ("vanilla", "partial_pi") for x in (0.5, 1.0)
    }
    test_rows = [json.loads(x) for x in open(synth_dir / "test.jsonl")]
    for r in results:
        assert r["adapter"] == "vlat_default/last" and r["unparsable"] == 0 and 0 <= r["accuracy"] <= 1
        want = [q for q in test_rows if (q["duration"] == 30.0) == (r["length_min"] == 0.5)]
        assert r["questions"] == len(want)
        assert r["audio_tokens_mean"] == (750 if r["length_min"] == 0.5 else 1875)
    preds = [json.loads(x) for x in open(out / "predictions.jsonl")]
    for r in results:  # the aggregate is the mean of the per-question records
        mine = [p for p in preds if (p["method"], p["length"]) == (r["method"], r["length_min"])]
        assert r["accuracy"] == pytest.approx(sum(p["correct"] for p in mine) / len(mine))
    with open(out / "results.csv") as f:
        assert len(list(csv.DictReader(f))) == 4
    md = (out / "results.md").read_text()
    assert "| vlat_default/last |" in md and "partial_pi · 1 min" in md


def test_evaluate_reads_the_published_layout(tmp_path, tiny_model_dir, yodas2_dir):
    """A local mirror of the hub layout: every test question scored once per method, the five questions of a
    recording share one audio encoding (even across row-group boundaries), lengths default to the folders."""
    from vlat.data import ColumnMapping, normalize, read_rows, resolve
    from vlat.evaluation import EvalSpec, Evaluator
    from vlat.rope import find_audio_model

    src = resolve(str(yodas2_dir), "test")
    want = [normalize(r, ColumnMapping(), None) for u in src.units for r in read_rows(src, u)]
    ev = Evaluator(
        EvalSpec(
            model=str(tiny_model_dir),
            data=str(yodas2_dir),
            methods=["vanilla", "partial_pi"],
            original_audio_seconds=20,
            dtype="float32",
            attn_implementation="sdpa",
        )
    )
    calls = []
    find_audio_model(ev.model).audio_tower.register_forward_hook(lambda *a: calls.append(1))
    preds, rows = ev.run(progress=False)
    recordings = {r.recording_id for r in want}
    assert len(calls) == len(recordings) == 2 and len(want) == 10
    for method in ("vanilla", "partial_pi"):
        assert sorted(p["id"] for p in preds if p["method"] == method) == sorted(r.id for r in want)
    assert {(r["method"], r["length_min"], r["questions"]) for r in rows} == {
        (m, x, 5) for m in ("vanilla", "partial_pi") for x in (0.5, 1.0)
    }
    out = tmp_path / "eval"  # the CLI on the same mirror, default --lengths
    res = evaluate("--model", tiny_model_dir, "--data", yodas2_dir, "--output", out, "--original-audio-seconds", "20")
    assert res.returncode == 0, res.stderr[-3000:]
    results = json.loads((out / "results.json").read_text())["results"]
    assert sorted((r["length_min"], r["questions"]) for r in results if r["method"] == "vanilla") == [
        (0.5, 5),
        (1.0, 5),
    ]


def test_yaml_config_and_generate_scoring(tmp_path, tiny_model_dir, synth_dir):
    conf = tmp_path / "eval.yaml"
    conf.write_text(
        f"model: {tiny_model_dir}\ndata: {synth_dir}\nmethods: partial_yarn\ncutoff_dim: 2\n"
        f"temperature: 1.2\nlengths: [0.5, 1.25]\nscoring: generate\nmax_questions: 5\n"
        f"output: {tmp_path / 'out'}\n"
    )
    res = evaluate("--config", conf)
    assert res.returncode == 0, res.stderr[-3000:]
    results = json.loads((tmp_path / "out" / "results.json").read_text())["results"]
    assert sum(r["questions"] for r in results) == 5 and {r["adapter"] for r in results} == {"base"}
    assert all(r["unparsable"] <= r["questions"] for r in results)


def _untouched(out):
    return (out / "results.json").read_text() == "old results\n"


@pytest.mark.parametrize("case", ["missing_adapter", "other_base", "no_columns", "bad_method"])
def test_bad_input_one_line_and_output_untouched(case, tmp_path, tiny_model_dir, synth_dir, adapter_dir):
    out = tmp_path / "eval"
    out.mkdir()
    (out / "results.json").write_text("old results\n")
    args = ["--model", tiny_model_dir, "--data", synth_dir, "--output", out, "--lengths", "0.5,1"]
    if case == "missing_adapter":
        args += ["--adapter", tmp_path / "nope-adapter"]
        expect = "no PEFT adapter"
    elif case == "other_base":
        from peft import LoraConfig, get_peft_model

        from vlat.testing import TinyModelConfig
        from vlat.testing.tiny_model import build_tiny_model, build_tokenizer

        other = build_tiny_model(build_tokenizer(), TinyModelConfig(hidden_size=96, intermediate_size=192))
        get_peft_model(other, LoraConfig(r=4, target_modules=r".*language_model.*\.q_proj")).save_pretrained(
            tmp_path / "other-adapter"
        )
        args += ["--adapter", tmp_path / "other-adapter"]
        expect = "does not fit model"
    elif case == "no_columns":
        (tmp_path / "d").mkdir()
        (tmp_path / "d" / "test.jsonl").write_text(json.dumps({"id": 1, "audio": "x.wav", "text": "hi"}) + "\n")
        args[3] = tmp_path / "d"
        expect = "no known MCQA layout"
    else:
        args += ["--methods", "vanilla,yarn"]
        expect = "--methods"
    res = evaluate(*args)
    assert res.returncode == 2, res.stderr[-2000:]
    err = [line for line in res.stderr.strip().splitlines() if "evaluate.py" in line]
    assert len(err) == 1 and expect in err[0] and "Traceback" not in res.stderr
    assert _untouched(out) and sorted(p.name for p in out.iterdir()) == ["results.json"]


def test_markdown_layout():
    rows = [
        {"adapter": a, "method": m, "length_min": x, "accuracy": acc}
        for a, acc in (("vanilla_ft", 0.5), ("vlat", 0.75))
        for m in ("vanilla", "partial_pi")
        for x in (2, 10)
    ]
    lines = markdown_table(rows).splitlines()
    assert lines[0] == "| model | vanilla · 2 min | vanilla · 10 min | partial_pi · 2 min | partial_pi · 10 min |"
    assert lines[2] == "| vanilla_ft | 50.00 | 50.00 | 50.00 | 50.00 |" and lines[3].startswith("| vlat | 75.00")
