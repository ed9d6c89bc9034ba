"""Evaluation throughput of Qwen2-Audio-7B on one GPU: questions per second, logits scoring with prefix reuse.

The full-size architecture with random bf16 weights, built directly on the GPU (see ``bench/train_step.py``).
Per recording, what ``evaluate.py`` runs: the audio encoded once (``encode_audio``), the prompt prefix prefilled
once (no logits), the recording's questions scored as one batch on the cached prefix (``score_questions``), Partial
PI RoPE. Inputs: ``minutes`` of audio (random log-mel features, 25 tokens/s) after 20 prompt tokens, 140 tokens per
question. Feature extraction is left out (``bench/featurize.py`` measures it: it is off the GPU).

    python bench/eval_throughput.py                # CUDA: 2/5/10 min, 5 questions per recording
    python bench/eval_throughput.py --tiny         # CPU smoke run on the tiny model
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import (  # noqa: E402
    TEXT_PREFIX,
    TEXT_SUFFIX,
    add_full_size_args,
    bench_model,
    free_memory,
    full_size_setup,
    gib_text,
    median,
    peak_memory_gib,
    results_name,
    synthetic_example,
    timed,
    write_results,
)
from flops import Arch, mfu, prefix_eval_flops  # noqa: E402

from vlat.evaluation import encode_audio, score_questions  # noqa: E402
from vlat.rope import AudioRopeConfig, apply_audio_rope  # noqa: E402

OPTION_IDS = [49, 50, 51, 52]  # any four ordinary token ids: the cost does not depend on which


def measure(model, minutes: float, questions: int, rounds: int, device, peak: float) -> dict:
    ex = synthetic_example(model.config.audio_token_index, minutes * 60)
    ids = ex["input_ids"].tolist()
    prefix, suffix = ids[: len(ids) - TEXT_SUFFIX], ids[len(ids) - TEXT_SUFFIX :]
    suffixes = [suffix[i:] + suffix[:i] for i in range(questions)]  # distinct questions of equal length
    feats, fmask = ex["input_features"], ex["feature_attention_mask"]

    def recording():
        embeds = encode_audio(model, feats, fmask)
        return score_questions(model, prefix, suffixes, embeds, OPTION_IDS)

    result: dict = {"minutes": minutes, "questions": questions, "audio_tokens": ex["audio_tokens"]}
    try:
        free_memory()
        recording()  # warm-up
        times = [timed(recording) for _ in range(rounds)]
        per_recording = median(times)
        flops = prefix_eval_flops(Arch.from_config(model.config), len(prefix), len(fmask), [len(s) for s in suffixes])
        result.update(
            oom=False,
            prefix_tokens=len(prefix),
            seconds_per_recording=times,
            median_seconds_per_recording=per_recording,
            questions_per_s=questions / per_recording,
            audio_seconds_per_s=minutes * 60 / per_recording,
            model_flops_per_recording=flops,
            mfu=mfu(flops, per_recording, peak),
            peak_memory_gib=peak_memory_gib(),
        )
    except torch.cuda.OutOfMemoryError as e:
        result.update(oom=True, error=str(e).splitlines()[0])
    finally:
        free_memory()
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_full_size_args(ap)
    ap.add_argument("--questions", type=int, default=5, help="questions per recording (YODAS2-MCQA: 5)")
    ap.add_argument("--attn", default="sdpa", choices=["sdpa", "eager", "flash_attention_2"])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--tiny", action="store_true", help="CPU smoke run: tiny model, 30 s and 1 min, 2 rounds")
    args = ap.parse_args()
    if args.tiny:
        args.size, args.minutes, args.rounds = "tiny", [0.5, 1.0], 2
    device, dtype, peak = full_size_setup(args)
    model = bench_model(args.size, device, dtype, args.attn, args.layers).eval()
    apply_audio_rope(model, AudioRopeConfig("partial_pi", original_audio_tokens=750))
    results = []
    for minutes in args.minutes:
        res = measure(model, minutes, args.questions, args.rounds, device, peak)
        results.append(res)
        if res["oom"]:
            print(f"{minutes:g} min: out of memory", flush=True)
        else:
            print(
                f"{minutes:g} min: {res['questions_per_s']:.2f} questions/s, {res['median_seconds_per_recording']:.3f} "
                f"s/recording, peak {gib_text(res['peak_memory_gib'])}, MFU {res['mfu']:.1%}",
                flush=True,
            )
    headline = {f"questions_per_s/{r['minutes']:g}min": r["questions_per_s"] for r in results if not r["oom"]}
    write_results(
        results_name("eval_throughput", args),
        {
            "size": args.size,
            "layers": args.layers,
            "dtype": str(dtype),
            "attn": args.attn,
            "matmul_peak_flops": peak,
            "text_tokens": {"prefix": TEXT_PREFIX, "per_question": TEXT_SUFFIX},
            "runs": results,
        },
        headline,
    )


if __name__ == "__main__":
    main()
