"""evaluate.py and shared-prefix scoring on the tiny offline model + synthetic data."""

import csv
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from vlat.evaluation import markdown_table
from vlat.testing.synth_data import QUESTIONS

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


def evaluate(*args):
    return subprocess.run(
        [sys.executable, str(ROOT / "evaluate.py"), "--no-progress", *map(str, args)],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )


@pytest.mark.seam
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
        "0.5,1.25",
        "--original-audio-seconds",
        "20",
        "--output",
        out,
    )
    assert res.returncode == 0, res.stderr[-3000:]
    # a plain PEFT adapter (no vlat record, as saved before records existed) still loads: its training is unrecorded
    assert set(json.loads((out / "results.json").read_text())["adapter_training"].values()) == {None}
    results = json.loads((out / "results.json").read_text())["results"]
    assert {(r["method"], r["length_min"]) for r in results} == {
        (m, x) for m in ("vanilla", "partial_pi") for x in (0.5, 1.25)
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
    assert "| vlat_default/last |" in md and "partial_pi · 1.25 min" in md

    # every cell says what it holds and how sure it is: recordings, durations, a 95% interval from per-recording
    # counts; the paired difference partial_pi - vanilla from the same questions (vlat.evaluation.stats by hand)
    from vlat.evaluation.stats import accuracy_interval, paired_difference

    by_key = {(p["method"], p["length"], p["id"]): p for p in preds}
    [pair_doc] = [json.loads((out / "results.json").read_text())["paired"]]
    assert {(r["a"], r["b"], r["length_min"]) for r in pair_doc} == {("partial_pi", "vanilla", x) for x in (0.5, 1.25)}
    for r in results:
        mine = [p for p in preds if (p["method"], p["length"]) == (r["method"], r["length_min"])]
        recs = sorted({p["recording"] for p in mine})
        assert (
            r["recordings"] == len(recs) == len({q["audio"] for q in test_rows if q["id"] in {p["id"] for p in mine}})
        )
        assert r["duration_s_min"] == r["duration_s_max"] == (30.0 if r["length_min"] == 0.5 else 75.0)
        per_rec = [[p for p in mine if p["recording"] == rec] for rec in recs]
        iv = accuracy_interval([sum(p["correct"] for p in ps) for ps in per_rec], [len(ps) for ps in per_rec])
        assert (r["ci95_low"], r["ci95_high"]) == pytest.approx((iv.low, iv.high))
        assert r["ci95_low"] <= r["accuracy"] <= r["ci95_high"]
        if r["method"] == "partial_pi":
            [pr] = [x for x in pair_doc if x["length_min"] == r["length_min"]]
            diffs = [sum(int(p["correct"]) - int(by_key["vanilla", p["length"], p["id"]]["correct"]) for p in ps)
                     for ps in per_rec]  # fmt: skip
            want_pair = paired_difference(diffs, [len(ps) for ps in per_rec])
            assert pr["difference"] == pytest.approx(want_pair.estimate) and pr["questions"] == r["questions"]
            assert pr["ci95_low"] == pytest.approx(want_pair.low) and pr["ci95_high"] == pytest.approx(want_pair.high)
    assert "Paired differences" in md and "partial_pi − vanilla" in md and " q / " in md
    with open(out / "paired.csv") as f:
        assert len(list(csv.DictReader(f))) == 2
    # beside the overall figure, per question kind (the synthetic data's "kind" column)
    by_kind = json.loads((out / "results.json").read_text())["by_category"]
    kinds = {q["kind"] for q in test_rows}
    assert {(r["method"], r["length_min"], r["category"]) for r in by_kind} == {
        (m, x, k) for m in ("vanilla", "partial_pi") for x in (0.5, 1.25) for k in kinds
    }
    for r in by_kind:
        want = [
            q for q in test_rows if q["kind"] == r["category"] and (q["duration"] == 30.0) == (r["length_min"] == 0.5)
        ]
        mine = [
            p
            for p in preds
            if (p["method"], p["length"], p["category"]) == (r["method"], r["length_min"], r["category"])
        ]
        assert r["questions"] == len(want) == len(mine)
        assert r["accuracy"] == pytest.approx(sum(p["correct"] for p in mine) / len(mine))
    assert "Accuracy per question category" in md


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
    q = len(QUESTIONS)  # per recording
    assert len(calls) == len(recordings) == 2 and len(want) == 2 * q
    for method in ("vanilla", "partial_pi"):
        assert sorted(p["id"] for p in preds if p["method"] == method) == sorted(r.id for r in want)
    assert {(r["method"], r["length_min"], r["questions"]) for r in rows} == {
        (m, x, q) for m in ("vanilla", "partial_pi") for x in (0.5, 1.0)
    }
    out = tmp_path / "eval"  # the CLI on the same mirror, default --lengths
    res = evaluate("--model", tiny_model_dir, "--data", yodas2_dir, "--output", out, "--original-audio-seconds", "20")
    assert res.returncode == 0, res.stderr[-3000:]
    doc = json.loads((out / "results.json").read_text())
    results = doc["results"]
    assert sorted((r["length_min"], r["questions"]) for r in results if r["method"] == "vanilla") == [
        (0.5, q),
        (1.0, q),
    ]
    assert doc["by_category"] == []  # the published layout names no category


def test_yaml_config_and_generate_scoring(tmp_path, tiny_model_dir, synth_dir):
    conf = tmp_path / "eval.yaml"
    conf.write_text(
        f"model: {tiny_model_dir}\ndata: {synth_dir}\nmethods: partial_yarn\ncutoff_dim: 2\n"
        f"temperature: 1.2\nlengths: [0.5, 1.25]\nscoring: generate\nmax_questions: 3\nprefill_chunk: 300\n"
        f"output: {tmp_path / 'out'}\n"
    )
    res = evaluate("--config", conf)
    assert res.returncode == 0, res.stderr[-3000:]
    results = json.loads((tmp_path / "out" / "results.json").read_text())["results"]
    # the cap ends inside the second recording (two questions each): 2 + 1
    assert sum(r["questions"] for r in results) == 3 and {r["adapter"] for r in results} == {"base"}
    assert all(r["unparsable"] <= r["questions"] for r in results)


def _untouched(out):
    return (out / "results.json").read_text() == "old results\n"


def _same_shape_other_base_adapter(tmp_path, record: bool):
    """A LoRA adapter trained on another tiny model of the same sizes (other weights): it loads on the test model
    without error. ``record``: saved as vlat saves adapters (with vlat_adapter.json); else a plain PEFT adapter."""
    from peft import LoraConfig, get_peft_model
    from transformers import Qwen2AudioForConditionalGeneration

    from vlat.testing import TinyModelConfig, write_tiny_model
    from vlat.training.adapter_record import write_record

    other_dir = write_tiny_model(tmp_path / "other-base", TinyModelConfig(seed=1))
    other = Qwen2AudioForConditionalGeneration.from_pretrained(other_dir)
    peft_model = get_peft_model(other, LoraConfig(r=4, target_modules=r".*language_model.*\.q_proj"))
    out = tmp_path / "other-base-adapter"
    peft_model.save_pretrained(out)
    if record:
        training = {"rope_method": "partial_pi", "original_audio_seconds": 30.0, "audio_compression": "pool:2"}
        write_record(out, str(other_dir), peft_model, training={**training, "vlat": None})
    return out


def test_an_adapter_of_another_base_model_runs_when_allowed(tmp_path, tiny_model_dir, synth_dir):
    path = _same_shape_other_base_adapter(tmp_path, record=True)
    args = ["--model", tiny_model_dir, "--data", synth_dir, "--adapter", path, "--methods", "vanilla"]
    res = evaluate(*args, "--allow-other-base", "--max-questions", "3", "--output", tmp_path / "out")
    assert res.returncode == 0, res.stderr[-2000:]
    assert len((tmp_path / "out" / "predictions.jsonl").read_text().splitlines()) == 3
    # its record says it was trained on pooled audio: shown in the results, and a warning for scoring it unpooled
    doc = json.loads((tmp_path / "out" / "results.json").read_text())
    assert doc["adapter_training"] == {
        "other-base-adapter": json.loads((path / "vlat_adapter.json").read_text())["training"]
    }
    assert doc["adapter_training"]["other-base-adapter"]["audio_compression"] == "pool:2"
    warning = "warning: adapter other-base-adapter was trained with audio compression pool:2, evaluated here under none"
    assert warning in res.stderr


@pytest.mark.parametrize(
    "case",
    [
        "missing_adapter",
        "other_base",
        "same_shape_other_base",
        "named_other_base",
        "no_columns",
        "bad_method",
        "bad_chunk",
        "bad_compare",
    ],
)
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
    elif case in ("same_shape_other_base", "named_other_base"):
        path = _same_shape_other_base_adapter(tmp_path, record=case == "same_shape_other_base")
        args += ["--adapter", path]
        expect = "whose weights differ" if case == "same_shape_other_base" else f"trained on base model {tmp_path}"
    elif case == "no_columns":
        (tmp_path / "d").mkdir()
        (tmp_path / "d" / "test.jsonl").write_text(json.dumps({"id": 1, "audio": "x.wav", "text": "hi"}) + "\n")
        args[3] = tmp_path / "d"
        expect = "no known MCQA layout"
    elif case == "bad_compare":
        args += ["--compare", "partial_pi:yarn"]
        expect = "--compare partial_pi:yarn: expected A:B"
    elif case == "bad_chunk":
        args += ["--prefill-chunk", "-5"]
        expect = "--prefill-chunk"
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


def evaluate_in_process(*args) -> int:
    """``evaluate.py``'s main in this process (so a test can stand in for the device)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("evaluate_cli", ROOT / "evaluate.py")
    cli = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(cli)
    return cli.main(["--no-progress", *map(str, args)])


@pytest.mark.parametrize("how", ["planned", "oom"])
def test_bucket_beyond_memory_is_skipped_in_one_line(how, tmp_path, tiny_model_dir, synth_dir, monkeypatch, capsys):
    """A device with room for the 30-s recordings only: the 75-s bucket is refused before it runs (the plan) or
    when it runs out of memory midway (a recording's first method scored, its second out of memory); either way one
    line says so, the finished bucket's results are written whole, nothing of the failed bucket is, exit 1."""
    from transformers import AutoConfig

    from vlat.evaluation import runner
    from vlat.evaluation.memory import recording_need
    from vlat.rope import current_config

    config = AutoConfig.from_pretrained(tiny_model_dir)
    between = recording_need(config, 4, 1500, 500, 4096, 2).total  # 30 s: 1,483 tokens, 1 window; 75 s: 2,611, 3
    if how == "planned":
        monkeypatch.setattr(runner, "available_bytes", lambda device: between)
    else:
        real = runner.score_questions

        def score(model, prefix, *a, **kw):
            if len(prefix) > 1000 and current_config(model).method == "partial_pi":
                raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 9.00 GiB")
            return real(model, prefix, *a, **kw)

        monkeypatch.setattr(runner, "score_questions", score)
    out = tmp_path / "eval"
    common = ["--model", tiny_model_dir, "--data", synth_dir, "--lengths", "0.5,1.25", "--original-audio-seconds", 20]
    rc = evaluate_in_process(*common, "--methods", "vanilla,partial_pi", "--output", out)
    err = capsys.readouterr().err
    assert rc == 1
    lines = [x for x in err.splitlines() if "1.25-min bucket" in x]
    assert len(lines) == 1 and lines[0].startswith("evaluate.py: error: the 1.25-min bucket")
    assert ("free on cpu" if how == "planned" else "ran out of memory") in lines[0]
    data = json.loads((out / "results.json").read_text())
    test_rows = [json.loads(x) for x in open(synth_dir / "test.jsonl")]
    short = sum(r["duration"] == 30.0 for r in test_rows)
    assert {(r["method"], r["length_min"], r["questions"]) for r in data["results"]} == {
        ("vanilla", 0.5, short),
        ("partial_pi", 0.5, short),
    }
    assert data["memory_skipped"] == {"1.25": len(test_rows) - short}
    preds = [json.loads(x) for x in open(out / "predictions.jsonl")]
    assert {p["length"] for p in preds} == {0.5}


def test_evaluate_each_compression_setting(tmp_path, tiny_model_dir, synth_dir):
    """--audio-compression: every setting evaluated, with its token counts (30 s: 750 -> 375; 75 s: 1875 -> 938),
    one column group per setting and method; a bad setting is a one-line error before the model loads."""
    out = tmp_path / "eval"
    args = ["--model", tiny_model_dir, "--data", synth_dir, "--methods", "vanilla,partial_pi", "--lengths", "0.5,1.25"]
    res = evaluate(*args, "--audio-compression", "none,pool:2,ltbm:0.5:global", "--output", out)
    assert res.returncode == 0, res.stderr[-3000:]
    results = json.loads((out / "results.json").read_text())["results"]
    settings = ("none", "pool:2", "ltbm:0.5:global")
    assert {(r["compression"], r["method"], r["length_min"]) for r in results} == {
        (c, m, x) for c in settings for m in ("vanilla", "partial_pi") for x in (0.5, 1.25)
    }
    tokens = {"none": (750, 1875), "pool:2": (375, 938), "ltbm:0.5:global": (375, 938)}
    for r in results:
        assert r["audio_tokens_mean"] == tokens[r["compression"]][r["length_min"] == 1.25]
    questions = {(r["compression"], r["method"], r["length_min"]): r["questions"] for r in results}
    assert len({(m, x, n) for (_, m, x), n in questions.items()}) == 4  # every setting scores the same questions
    preds = [json.loads(x) for x in open(out / "predictions.jsonl")]
    assert {p["compression"] for p in preds} == set(settings)
    md = (out / "results.md").read_text()
    assert "pool:2 · partial_pi · 1.25 min" in md and "ltbm:0.5:global · vanilla · 0.5 min" in md
    with open(out / "results.csv") as f:
        assert {row["compression"] for row in csv.DictReader(f)} == set(settings)

    bad = evaluate(*args, "--audio-compression", "none,pool:1", "--output", tmp_path / "bad")
    assert bad.returncode == 2 and not (tmp_path / "bad").exists()
    assert bad.stderr.strip().splitlines() == [
        "evaluate.py: error: --audio-compression: 'pool:1' is not none, pool:K (K >= 2) or ltbm:R[:W|:global] "
        "(0 < R < 1)"
    ]
