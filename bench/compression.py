"""What audio-token compression buys: tokens, evaluation questions/s and training step time per setting.

For each ``--settings`` entry (``vlat.audio.compression``) and each length, on random-weight Qwen2-Audio (the full 7B
architecture in bf16 on CUDA, the tiny test model in fp32 on CPU), under Partial PI (window 750):

- ``audio_tokens``: audio tokens the language model sees for the recording;
- evaluation: what ``evaluate.py`` runs per recording (the audio encoded and compressed once, the prefix prefilled
  once, ``--questions`` questions packed on it: ``score_questions``), questions per second;
- training: one step of what ``train.py`` runs on one sample (LoRA qkvo, ``answer_loss`` forward and backward
  through the compression seam), seconds per step;
- the compression itself: seconds of ``vlat.audio.compression.compress`` on an encoder output of the recording's shape.

Inputs as the other benchmarks: random log-mel features after 20 prompt tokens, 140 tokens per question.

    python bench/compression.py                       # CUDA: full size, 2 and 10 minutes
    python bench/compression.py --tiny                # CPU smoke run (tiny model, 30 s and 1 min)
    python bench/compression.py --minutes 2,10 --size tiny --tag cpu   # the CPU figures in docs/benchmarks.md
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import (  # noqa: E402
    TEXT_SUFFIX,
    add_full_size_args,
    bench_model,
    free_memory,
    full_size_setup,
    median,
    peak_memory_gib,
    results_name,
    synthetic_example,
    timed,
    to_device,
    write_results,
)

from vlat.audio.compression import AudioCompression, compress  # noqa: E402
from vlat.cliargs import csv_list  # noqa: E402
from vlat.evaluation.prefix import DEFAULT_PREFILL_CHUNK, encode_audio, score_questions  # noqa: E402
from vlat.rope import AudioRopeConfig, apply_audio_compression, apply_audio_rope  # noqa: E402
from vlat.training.lm_head import answer_loss  # noqa: E402
from vlat.training.lora import prepare_for_training  # noqa: E402

OPTION_IDS = [49, 50, 51, 52]
SETTINGS = ["none", "pool:2", "pool:3", "ltbm:0.5", "ltbm:0.5:global", "ltbm:0.67"]


def compress_seconds(model, ex, comp: AudioCompression, rounds: int) -> float:
    """Seconds of ``compress`` alone on an encoder output of the recording's shape (windows x 750 x d_model)."""
    from vlat.audio.decode import audio_tokens_for_frames

    lengths = audio_tokens_for_frames(ex["feature_attention_mask"].sum(-1))
    p = next(model.parameters())
    hidden = torch.randn(len(lengths), 750, model.config.audio_config.d_model, device=p.device, dtype=p.dtype)
    compress(hidden, lengths, comp)
    return median([timed(lambda: compress(hidden, lengths, comp)) for _ in range(rounds)])


def evaluation(model, ex, questions: int, rounds: int, chunk: int) -> dict:
    ids = ex["input_ids"].tolist()
    prefix, suffix = ids[: len(ids) - TEXT_SUFFIX], ids[len(ids) - TEXT_SUFFIX :]
    suffixes = [suffix[i:] + suffix[:i] for i in range(questions)]
    feats, fmask = ex["input_features"], ex["feature_attention_mask"]

    def recording():
        return score_questions(model, prefix, suffixes, encode_audio(model, feats, fmask), OPTION_IDS, chunk)

    free_memory()
    recording()
    per = median([timed(recording) for _ in range(rounds)])
    return {
        "eval_seconds_per_recording": per,
        "questions_per_s": questions / per,
        "eval_peak_memory_gib": peak_memory_gib(),
    }


def training(model, ex, rounds: int, device, dtype) -> dict:
    batch = {k: ex[k][None] for k in ("input_ids", "attention_mask", "labels")}
    batch.update(input_features=ex["input_features"], feature_attention_mask=ex["feature_attention_mask"])
    batch = to_device(batch, device, dtype)

    def step():
        with torch.autocast(device.split(":")[0], dtype=torch.bfloat16, enabled=device.startswith("cuda")):
            loss = answer_loss(model, batch)
        loss.backward()
        model.zero_grad(set_to_none=True)

    free_memory()
    step()
    return {"train_step_s": median([timed(step) for _ in range(rounds)]), "train_peak_memory_gib": peak_memory_gib()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_full_size_args(ap)
    ap.add_argument("--settings", type=csv_list(str), default=SETTINGS, help="compression settings to compare")
    ap.add_argument("--questions", type=int, default=5)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--attn", default="sdpa", choices=["sdpa", "eager", "flash_attention_2"])
    ap.add_argument("--prefill-chunk", type=int, default=DEFAULT_PREFILL_CHUNK)
    ap.add_argument("--tiny", action="store_true", help="CPU smoke run: tiny model, 30 s and 1 min, 1 round")
    ap.set_defaults(minutes=[2.0, 10.0])
    args = ap.parse_args()
    if args.tiny:
        args.size, args.minutes, args.rounds, args.settings = "tiny", [0.5, 1.0], 1, ["none", "pool:2", "ltbm:0.5"]
    settings = [AudioCompression.parse(s) for s in args.settings]
    device, dtype, _ = full_size_setup(args)
    base = bench_model(args.size, device, dtype, args.attn, args.layers).eval()
    model = prepare_for_training(base, "qkvo", 8, 16, 0.05, "full" if device == "cuda" else "off")
    apply_audio_rope(model, AudioRopeConfig("partial_pi", original_audio_tokens=750))
    runs, headline = [], {}
    for minutes in args.minutes:
        for comp in settings:
            apply_audio_compression(model, comp)
            ex = synthetic_example(model.config.audio_token_index, minutes * 60, compression=comp)
            run = {"minutes": minutes, "compression": str(comp), "audio_tokens": ex["audio_tokens"]}
            try:
                model.eval()
                with torch.no_grad():
                    run.update(evaluation(model, ex, args.questions, args.rounds, args.prefill_chunk))
                    run["compress_seconds_per_recording"] = compress_seconds(model, ex, comp, args.rounds)
                model.train()
                run.update(training(model, ex, args.rounds, device, dtype))
                run["oom"] = False
            except torch.OutOfMemoryError as e:
                run.update(oom=True, error=str(e).splitlines()[0])
            finally:
                free_memory()
            runs.append(run)
            if run["oom"]:
                print(f"{minutes:g} min, {comp}: out of memory", flush=True)
                continue
            print(
                f"{minutes:g} min, {comp}: {run['audio_tokens']} audio tokens, {run['questions_per_s']:.2f} q/s "
                f"(compress {run['compress_seconds_per_recording'] * 1e3:.1f} ms), train step "
                f"{run['train_step_s']:.3f} s",
                flush=True,
            )
            key = f"{minutes:g}min/{comp}"
            headline.update({f"audio_tokens/{key}": float(run["audio_tokens"])})
            headline.update(
                {f"questions_per_s/{key}": run["questions_per_s"], f"train_step_s/{key}": run["train_step_s"]}
            )
    write_results(
        results_name("compression", args),
        {
            "size": args.size,
            "layers": args.layers,
            "dtype": str(dtype),
            "attn": args.attn,
            "rope": "partial_pi",
            "questions": args.questions,
            "runs": runs,
        },
        headline,
    )


if __name__ == "__main__":
    main()
