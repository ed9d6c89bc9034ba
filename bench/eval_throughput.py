"""Evaluation throughput of Qwen2-Audio-7B (or ``--family audioflamingo3``) on one GPU: questions per second, with
and without prefix reuse.

The full-size architecture with random bf16 weights, built directly on the GPU (see ``bench/train_step.py``).
Per recording, what ``evaluate.py`` runs (logits scoring, Partial PI): the audio encoded once (``encode_audio``),
the prompt prefix prefilled once in ``--prefill-chunk`` chunks (no logits), the recording's questions packed on
the one cached prefix (``score_questions``). Side by side, the no-reuse baseline: every question encodes the audio
and prefills the prefix again, then scores its own suffix (same kernels, same chunking: the ratio is what reuse
buys). Inputs: ``minutes`` of audio (random log-mel features, 25 tokens/s) after 20 prompt tokens, 140 tokens per
question. Feature extraction is left out (``bench/featurize.py`` measures it: it is off the GPU). Out of memory
is recorded as such, per path and length; each path's peak memory is measured on its own.

    python bench/eval_throughput.py                         # CUDA: 2/10/20/30/60 min, 5 questions per recording
    python bench/eval_throughput.py --minutes 60 --tag 60min
    python bench/eval_throughput.py --tiny                  # CPU smoke run on the tiny model
    python bench/eval_throughput.py --tiny --family audioflamingo3
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

from vlat.cliargs import csv_list  # noqa: E402
from vlat.evaluation.prefix import DEFAULT_PREFILL_CHUNK, encode_audio, score_questions  # noqa: E402
from vlat.models import family_of_model, find_audio_model  # noqa: E402
from vlat.rope import AudioRopeConfig, apply_audio_rope  # noqa: E402

OPTION_IDS = [49, 50, 51, 52]  # any four ordinary token ids: the cost does not depend on which


def measure(model, minutes: float, questions: int, rounds: int, reuse: bool, chunk: int, peak: float) -> dict:
    ex = synthetic_example(find_audio_model(model).config.audio_token_id, minutes * 60, family=family_of_model(model))
    ids = ex["input_ids"].tolist()
    prefix, suffix = ids[: len(ids) - TEXT_SUFFIX], ids[len(ids) - TEXT_SUFFIX :]
    suffixes = [suffix[i:] + suffix[:i] for i in range(questions)]  # distinct questions of equal length
    feats, fmask = ex["input_features"], ex["feature_attention_mask"]

    def recording():
        if reuse:
            embeds = encode_audio(model, feats, fmask)
            return score_questions(model, prefix, suffixes, embeds, OPTION_IDS, prefill_chunk=chunk)
        return [  # no reuse: each question from scratch
            score_questions(model, prefix, [s], encode_audio(model, feats, fmask), OPTION_IDS, prefill_chunk=chunk)
            for s in suffixes
        ]

    result: dict = {"minutes": minutes, "questions": questions, "reuse": reuse, "audio_tokens": ex["audio_tokens"]}
    try:
        free_memory()
        recording()  # warm-up
        times = [timed(recording) for _ in range(rounds)]
        per_recording = median(times)
        arch, lens = Arch.from_config(model.config), [len(s) for s in suffixes]
        if reuse:
            flops = prefix_eval_flops(arch, len(prefix), len(fmask), lens, chunk=chunk)
        else:
            flops = sum(prefix_eval_flops(arch, len(prefix), len(fmask), [n], chunk=chunk) for n in lens)
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
    except torch.OutOfMemoryError as e:
        result.update(oom=True, error=str(e).splitlines()[0])
    finally:
        free_memory()
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_full_size_args(ap)
    ap.add_argument("--questions", type=int, default=5, help="questions per recording (YODAS2-MCQA: 5)")
    ap.add_argument("--attn", default="sdpa", choices=["sdpa", "eager", "flash_attention_2"])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--prefill-chunk", type=int, default=DEFAULT_PREFILL_CHUNK, help="tokens per prefill forward")
    ap.add_argument(
        "--baseline-minutes",
        type=csv_list(float),
        help="lengths at which the no-reuse baseline also runs (default: every length)",
    )
    ap.add_argument("--tiny", action="store_true", help="CPU smoke run: tiny model, 30 s and 1 min, 2 rounds")
    ap.set_defaults(minutes=[2.0, 10.0, 20.0, 30.0, 60.0])
    args = ap.parse_args()
    if args.tiny:
        args.size, args.minutes, args.rounds = "tiny", [0.5, 1.0], 2
    device, dtype, peak = full_size_setup(args)
    model = bench_model(args.size, device, dtype, args.attn, args.layers, args.family).eval()
    window = int(family_of_model(model).tokens_for_frames(3000))  # 30 s of audio: 750 tokens (Voxtral 375)
    apply_audio_rope(model, AudioRopeConfig("partial_pi", original_audio_tokens=window))
    results = []
    for minutes in args.minutes:
        pair = {}
        baseline = args.baseline_minutes is None or minutes in args.baseline_minutes
        for reuse in (True, False) if baseline else (True,):
            res = measure(model, minutes, args.questions, args.rounds, reuse, args.prefill_chunk, peak)
            results.append(res)
            pair[reuse] = res
            name = "reuse" if reuse else "no reuse"
            if res["oom"]:
                print(f"{minutes:g} min, {name}: out of memory", flush=True)
                continue
            print(
                f"{minutes:g} min, {name}: {res['questions_per_s']:.2f} questions/s, "
                f"{res['median_seconds_per_recording']:.3f} s/recording, peak {gib_text(res['peak_memory_gib'])}, "
                f"MFU {res['mfu']:.1%}",
                flush=True,
            )
        if baseline and not (pair[True]["oom"] or pair[False]["oom"]):
            pair[True]["speedup_vs_no_reuse"] = pair[True]["questions_per_s"] / pair[False]["questions_per_s"]
            print(f"{minutes:g} min: reuse is {pair[True]['speedup_vs_no_reuse']:.2f}x no reuse", flush=True)
    headline = {
        f"questions_per_s/{r['minutes']:g}min{'' if r['reuse'] else '/no_reuse'}": r["questions_per_s"]
        for r in results
        if not r["oom"]
    }
    headline.update(
        {
            f"speedup_vs_no_reuse/{r['minutes']:g}min": r["speedup_vs_no_reuse"]
            for r in results
            if "speedup_vs_no_reuse" in r
        }
    )
    write_results(
        results_name("eval_throughput", args),
        {
            "family": args.family,
            "size": args.size,
            "layers": args.layers,
            "dtype": str(dtype),
            "attn": args.attn,
            "matmul_peak_flops": peak,
            "text_tokens": {"prefix": TEXT_PREFIX, "per_question": TEXT_SUFFIX},
            "prefill_chunk": args.prefill_chunk,
            "runs": results,
        },
        headline,
    )


if __name__ == "__main__":
    main()
