"""Shared helpers of the benchmark scripts: timing, machine description, results files."""

from __future__ import annotations

import datetime as dt
import os
import platform
import statistics
import time
from pathlib import Path

import torch

RESULTS = Path(os.environ.get("VLAT_BENCH_RESULTS", Path(__file__).resolve().parent / "results"))


def machine() -> str:
    if torch.cuda.is_available():
        return f"{torch.cuda.get_device_name()} (CUDA {torch.version.cuda})"
    return f"CPU {platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch threads {torch.get_num_threads()}"


def timed(fn, sync: bool = True) -> float:
    if sync and torch.cuda.is_available():
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    fn()
    if sync and torch.cuda.is_available():
        torch.cuda.synchronize()
    return time.perf_counter() - t0


def median(xs):
    return statistics.median(xs)


def write_results(name: str, results: dict, headline: dict[str, float]) -> Path:
    """Write ``bench/results/<name>.json`` (with date, machine, command) and print headline lines last."""
    import sys

    from vlat.io import write_json_atomic

    record = {
        "benchmark": name,
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "machine": machine(),
        "command": " ".join(["python", *sys.argv]),
        **results,
        **headline,
    }
    path = RESULTS / f"{name}.json"
    write_json_atomic(path, record)
    for key, value in headline.items():
        print(f"{key}: {value:.4g}" if isinstance(value, float) else f"{key}: {value}")
    return path


# -- full-size / tiny models and inputs of the GPU benchmarks ---------------------------------------------------------
TEXT_PREFIX, TEXT_SUFFIX, ANSWER = 20, 140, 12  # prompt tokens before / after the audio; labelled answer tokens


def bench_model(
    size: str, device: str, dtype: torch.dtype, attn: str, layers: int | None = None, family: str = "qwen2_audio"
):
    """Random-weight model of ``family`` (:mod:`vlat.models`): ``full`` = the published architecture (Qwen2-Audio-7B,
    Audio Flamingo 3), built on ``device``; ``tiny`` = test size.

    ``layers`` shrinks the full architecture's depth (text and audio) for quick checks.
    """
    from vlat.models import FAMILIES
    from vlat.testing.full_size import build_random_model
    from vlat.testing.tiny_model import build_tiny, family_tokenizer_and_processor

    if size == "full":
        return build_random_model(FAMILIES[family].published_config(layers, layers), device, dtype, attn)
    tokenizer, _ = family_tokenizer_and_processor(family)
    model = build_tiny(family, tokenizer).to(device, dtype)
    model.set_attn_implementation(attn)
    return model


def synthetic_example(audio_token_id: int, seconds: float, seed: int = 0, compression=None, family=None) -> dict:
    """One MCQA-shaped training example: random text ids around ``seconds`` of audio, random log-mel features.

    Token counts follow ``family``'s window arithmetic (default Qwen2-Audio: 30-s windows, 750 tokens each, a shorter
    last window; Voxtral: 375 per window, every window whole), per window compressed by ``compression`` (a
    ``vlat.audio.compression`` setting; ``audio_tokens``: the run's length).
    """
    from vlat.audio.compression import AudioCompression
    from vlat.data.prompts import IGNORE_INDEX
    from vlat.models import QWEN2_AUDIO

    family = family or QWEN2_AUDIO
    g = torch.Generator().manual_seed(seed)
    frames = round(seconds * 100)  # 10 ms hop
    per_window = [min(3000, frames - w * 3000) for w in range(-(-frames // 3000))]
    fmask = torch.zeros(len(per_window), 3000, dtype=torch.long)
    for w, n in enumerate(per_window):
        fmask[w, : 3000 if family.whole_recording_features else n] = 1
    n_audio = int(AudioCompression.parse(compression).count(family.tokens_for_frames(fmask.sum(-1))).sum())

    def text(n: int) -> torch.Tensor:  # ordinary tokens (byte tokens in the tiny vocabulary): never a special id
        return torch.randint(0, 256, (n,), generator=g)

    ids = torch.cat([text(TEXT_PREFIX), torch.full((n_audio,), audio_token_id), text(TEXT_SUFFIX)])
    labels = torch.full_like(ids, IGNORE_INDEX)
    labels[-ANSWER:] = ids[-ANSWER:]
    return {
        "input_ids": ids,
        "attention_mask": torch.ones_like(ids),
        "labels": labels,
        "input_features": torch.randn(len(per_window), 128, 3000, generator=g),
        "feature_attention_mask": fmask,
        "audio_tokens": n_audio,
    }


def to_device(batch: dict, device, dtype) -> dict:
    return {
        k: (v.to(device, dtype) if v.is_floating_point() else v.to(device)) if isinstance(v, torch.Tensor) else v
        for k, v in batch.items()
    }


def matmul_peak(device: str, dtype: torch.dtype, n: int = 8192, repeats: int = 20) -> float:
    """Measured dense matmul FLOP/s of this device: best of ``repeats`` n×n×n products (the MFU denominator)."""
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    for _ in range(3):
        a @ b
    best = min(timed(lambda: a @ b) for _ in range(repeats))
    return 2 * n**3 / best


def peak_memory_gib() -> float | None:
    """Peak CUDA memory allocated since the last reset, GiB (None on CPU)."""
    return torch.cuda.max_memory_allocated() / 2**30 if torch.cuda.is_available() else None


def free_memory() -> None:
    import gc

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()


def add_full_size_args(ap) -> None:
    """Options shared by the full-size GPU benchmarks."""
    from vlat.cliargs import csv_list

    ap.add_argument("--size", choices=["full", "tiny"], help="default: full on CUDA, tiny on CPU")
    ap.add_argument("--layers", type=int, help="shrink the full model's depth (text and audio) for quick checks")
    ap.add_argument("--minutes", type=csv_list(float), default=[2.0, 5.0, 10.0], help="audio lengths")
    ap.add_argument("--tag", help="results file bench/results/<benchmark>-TAG.json (keeps split runs apart)")
    add_family_arg(ap)


def add_family_arg(ap) -> None:
    from vlat.models import FAMILIES

    ap.add_argument("--family", choices=list(FAMILIES), default="qwen2_audio", help="model family (vlat.models)")


def full_size_setup(args) -> tuple[str, torch.dtype, float]:
    """Device and dtype (bf16 on CUDA, fp32 on CPU), ``args.size`` resolved, the measured matmul peak (FLOP/s)."""
    cuda = torch.cuda.is_available()
    device, dtype = ("cuda", torch.bfloat16) if cuda else ("cpu", torch.float32)
    args.size = args.size or ("full" if cuda else "tiny")
    peak = matmul_peak(device, dtype, *((8192, 20) if cuda else (1024, 5)))
    print(f"measured {dtype} matmul peak: {peak / 1e12:.1f} TFLOP/s", flush=True)
    return device, dtype, peak


def results_name(benchmark: str, args) -> str:
    family = getattr(args, "family", "qwen2_audio")
    name = benchmark + ("_tiny" if args.tiny else "") + ("" if family == "qwen2_audio" else f"-{family}")
    tag = getattr(args, "tag", None)
    return name + (f"-{tag}" if tag else "")


def gib_text(gib: float | None) -> str:
    return "n/a" if gib is None else f"{gib:.1f} GiB"
