"""Benchmarks: smoke runs of every script at tiny scale, and the MFU formula against torch's FLOP counter.

The figures themselves live in docs/benchmarks.md.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
from common import ANSWER, synthetic_example  # noqa: E402
from flops import Arch, prefix_eval_flops, train_step_flops  # noqa: E402

from vlat.data.collate import MCQACollator  # noqa: E402
from vlat.evaluation import encode_audio, score_questions  # noqa: E402
from vlat.testing.full_size import build_random_model, qwen2_audio_7b_config  # noqa: E402
from vlat.testing.tiny_model import build_tiny_model, build_tokenizer  # noqa: E402
from vlat.training.lm_head import answer_loss  # noqa: E402
from vlat.training.lora import prepare_for_training  # noqa: E402


@pytest.mark.parametrize(
    "script,keys",
    [
        ("featurize.py", ["featurize_realtime_factor"]),
        ("prefix_eval.py", ["prefix_speedup_1", "prefix_speedup_5"]),
        ("padding.py", ["padding_fraction_random", "padding_fraction_bucketed"]),
        ("dataloader.py", ["audio_s_per_s/1w", "audio_s_per_s/2w", "speedup_2w_vs_1w"]),
        ("dataloader.py --expand-on-cpu", ["audio_s_per_s/1w", "audio_s_per_s/2w", "speedup_2w_vs_1w"]),
        ("two_process_scaling.py", ["speedup_2p/compute", "speedup_2p/parquet_decode", "speedup_2p/featurize"]),
        ("train_step.py", ["train_step_s/0.5min-q-ckpt-sdpa-b1", "mfu/0.5min-qkvo-ckpt-sdpa-b2"]),
        ("train_step.py --loss stock", ["train_step_s/0.5min-q-ckpt-sdpa-b1", "mfu/0.5min-qkvo-ckpt-sdpa-b2"]),
        ("rope_overhead.py --family audioflamingo3", ["rope_overhead_whole_yarn", "rope_overhead_partial_yarn"]),
        ("rope_overhead.py --family voxtral", ["rope_overhead_whole_yarn", "rope_overhead_partial_yarn"]),
        (
            "eval_throughput.py --family audioflamingo3",
            ["questions_per_s/0.5min", "questions_per_s/1min/no_reuse", "speedup_vs_no_reuse/1min"],
        ),
        (
            "eval_throughput.py --family voxtral",
            ["questions_per_s/0.5min", "questions_per_s/1min/no_reuse", "speedup_vs_no_reuse/1min"],
        ),
        (
            "ask_latency.py --minutes 1 --questions 2 --new-tokens 4",
            ["prepare_s", "ttft_s", "tokens_per_s", "prefills"],
        ),
    ],
)
def test_bench_script_tiny(tmp_path, script, keys):
    res = subprocess.run(
        [sys.executable, str(ROOT / "bench" / script.split()[0]), "--tiny", *script.split()[1:]],
        capture_output=True,
        text=True,
        env={**os.environ, "VLAT_BENCH_RESULTS": str(tmp_path)},
    )
    assert res.returncode == 0, res.stderr[-2000:]
    last = res.stdout.strip().splitlines()[-1]
    name, value = last.rsplit(":", 1)
    assert name == keys[-1] and float(value) > 0
    record = json.loads(next(tmp_path.glob("*.json")).read_text())
    assert all(record[k] > 0 for k in keys) and record["machine"] and record["command"]
    assert not any(run.get("oom") for run in record.get("runs", []))


@pytest.mark.slow
def test_gpu_suite_tiny_runs_every_step(tmp_path):
    """The GPU suite at tiny scale on CPU: every step runs its script (rope_overhead, eval_throughput, compression,
    the model checkpoint, train_loop three times through train.py), and the summary holds each one's figures."""
    res = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "gpu_suite.py"), "--tiny"],
        capture_output=True,
        text=True,
        env={**os.environ, "VLAT_BENCH_RESULTS": str(tmp_path)},
    )
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    [path] = tmp_path.glob("gpu-suite-*_tiny.json")
    summary = json.loads(path.read_text())
    steps = summary["steps"]
    assert list(steps) == [
        "eval", "rope", "compression", "model", "train_default", "train_10min", "train_30min",
        "rope_af3", "eval_af3", "rope_voxtral", "eval_voxtral",
    ]  # fmt: skip
    assert all(s["status"] == "ok" for s in steps.values()), {k: s["status"] for k, s in steps.items()}
    want = {
        "eval": ["questions_per_s/0.5min", "questions_per_s/1min/no_reuse", "speedup_vs_no_reuse/1min"],
        "rope": ["rope_overhead_whole_yarn", "rope_overhead_partial_yarn"],
        "compression": ["audio_tokens/1min/pool:2", "questions_per_s/1min/ltbm:0.5", "train_step_s/1min/ltbm:0.5"],
        "train_default": ["step_s/fast", "step_s/plain", "mfu/fast", "speedup_fast_vs_plain"],
        "train_10min": ["step_s/fast"],
        "rope_voxtral": ["rope_overhead_whole_yarn", "rope_overhead_partial_yarn"],
        "eval_voxtral": ["questions_per_s/0.5min"],
    }
    for step, keys in want.items():
        assert all(steps[step]["headline"][k] > 0 for k in keys), (step, steps[step]["headline"])
    assert [t["target"].split(":")[0] for t in summary["targets"]] == [
        "default configuration, fast path",
        "60-minute evaluation",
        "prefix reuse at 10 minutes",
    ]
    assert summary["machine"].startswith("CPU") and summary["commit"]
    assert (tmp_path / path.name.replace(".json", ".md")).read_text().startswith("# GPU suite")


def test_gpu_suite_records_a_failed_step_and_runs_the_next(tmp_path, monkeypatch, capsys):
    """One step out of memory, one out of its time budget (its child processes stopped), one fine; one that needs
    the model checkpoint is not run without it: each recorded, the suite exits 1."""
    import gpu_suite
    from gpu_suite import Step

    marker = tmp_path / "child-still-running"
    child = f"import time, pathlib; time.sleep(3); pathlib.Path({str(marker)!r}).touch()"
    sleeper = f"import subprocess, sys, time; subprocess.Popen([sys.executable, '-c', {child!r}]); time.sleep(60)"
    steps = [
        Step("oom", "x", ["-c", "import sys; print('CUDA out of memory'); sys.exit(1)"], [], 30),
        Step("slow", "x", ["-c", sleeper], [], 2),
        Step("fine", "x", ["-c", "print('fine')"], [], 30),
        Step("needs", "x", ["-c", "print('never')"], [], 30, needs_model=True),
    ]
    monkeypatch.setattr(gpu_suite, "STEPS", steps)
    monkeypatch.setenv("VLAT_BENCH_RESULTS", str(tmp_path))
    assert gpu_suite.main(["--deadline", "60"]) == 1
    summary = json.loads(next(tmp_path.glob("gpu-suite-*.json")).read_text())
    status = {k: s["status"] for k, s in summary["steps"].items()}
    assert status == {
        "oom": "out of memory",
        "slow": "out of time (2 s)",
        "fine": "ok",
        "needs": "not run: no model checkpoint (step model)",
    }
    assert summary["steps"]["fine"]["output_tail"] == ["fine"]
    import time

    time.sleep(4)
    assert not marker.exists()  # the timed-out step's own children were stopped with it


def test_full_size_architecture_has_the_published_parameter_count():
    model = build_random_model(qwen2_audio_7b_config(), device="meta")
    h, layers, ffn, vocab = 4096, 32, 11008, 156032
    text_layer = 4 * h * h + 3 * h + 3 * h * ffn + 2 * h  # q/k/v (+bias), o, MLP, two RMSNorms
    text = 2 * vocab * h + layers * text_layer + h  # embeddings, lm_head (untied), final norm
    d, a_ffn = 1280, 5120
    audio_layer = 4 * d * d + 3 * d + 2 * d * a_ffn + a_ffn + d + 2 * 2 * d  # k_proj has no bias; two LayerNorms
    audio = (128 * 3 * d + d) + (d * 3 * d + d) + 1500 * d + 32 * audio_layer + 2 * d
    projector = d * h + h
    assert sum(p.numel() for p in model.parameters()) == text + audio + projector == 8_397_094_912
    assert model.dtype == torch.bfloat16
    assert model.model.audio_tower.conv1.weight.device.type == "meta"  # built where asked, nothing on the CPU


@pytest.fixture(scope="module")
def eager_tiny():
    tok = build_tokenizer()
    return lambda: build_tiny_model(tok).to(torch.float32).requires_grad_(False)


@pytest.mark.parametrize("lora", ["q", "qkvo"])
def test_train_step_flops_match_torch_flop_counter(eager_tiny, lora):
    model = prepare_for_training(eager_tiny(), lora, 4, 8, 0.0, False)
    model.base_model.model.set_attn_implementation("eager")  # attention as plain matmuls, which torch counts
    audio_id = model.config.audio_token_index
    batch = MCQACollator(0)([synthetic_example(audio_id, 45, seed=s) for s in range(2)])
    with FlopCounterMode(display=False) as counter:
        answer_loss(model, batch).backward()
    seq_len, windows = batch["input_ids"].shape[1], batch["input_features"].shape[0] // 2
    want = train_step_flops(Arch.from_config(model.config), seq_len, windows, 2, lora, 4, ANSWER, attention="full")
    assert counter.get_total_flops() == want
    # causal counting (used for MFU) drops half of the language model's T x T products, forward and backward
    arch = Arch.from_config(model.config)
    causal = train_step_flops(arch, seq_len, windows, 2, lora, 4, ANSWER)
    backward_layers = 2 * arch.layers if lora == "qkvo" else 2 * arch.layers - 1  # layer 0: no dK/dV without k/v LoRA
    half = 2 * seq_len**2 * arch.q_dim  # one layer's forward attention, halved
    assert want - causal == pytest.approx(2 * half * (arch.layers + backward_layers))


def test_prefix_eval_flops_match_torch_flop_counter(eager_tiny):
    model = eager_tiny().eval()
    model.set_attn_implementation("eager")
    ex = synthetic_example(model.config.audio_token_index, 45)
    ids = ex["input_ids"].tolist()
    prefix, suffix = ids[:-140], ids[-140:]
    suffixes = [suffix, suffix[:100]]
    with FlopCounterMode(display=False) as counter:
        embeds = encode_audio(model, ex["input_features"], ex["feature_attention_mask"])
        score_questions(model, prefix, suffixes, embeds, [49, 50, 51, 52], prefill_chunk=500)
    arch = Arch.from_config(model.config)
    want = prefix_eval_flops(arch, len(prefix), 2, [140, 100], attention="full", chunk=500)
    assert len(prefix) > 1000 and counter.get_total_flops() == want
    # the useful work: chunking changes none of it; packing adds only the masked products between questions
    causal = prefix_eval_flops(arch, len(prefix), 2, [140, 100])
    assert causal == prefix_eval_flops(arch, len(prefix), 2, [140, 100], chunk=500)
    masked = (
        4
        * arch.layers
        * arch.q_dim
        * (240 * len(prefix) + 240 * 240 - 140 * (len(prefix) + 70) - 100 * (len(prefix) + 50))
    )
    chunk_masked = (
        4
        * arch.layers
        * arch.q_dim
        * sum(c * (s + c) - c * (s + c / 2) for s in range(0, len(prefix), 500) for c in [min(500, len(prefix) - s)])
    )
    assert want - causal == pytest.approx(masked + chunk_masked)
