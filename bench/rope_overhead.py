"""Forward-time overhead of the audio-only RoPE: partial_yarn / vanilla and whole_yarn / vanilla, same input.

Interleaved repeats in one process; the figure is the median of per-round ratios.

    python bench/rope_overhead.py                    # 15,000 audio tokens (10 min of Qwen2-Audio audio): tiny model
                                                     # on CPU, the full-size 7B architecture (random bf16) on CUDA
    python bench/rope_overhead.py --model DIR        # any checkpoint directory of a supported family
    python bench/rope_overhead.py --tiny             # smoke test (small input, 2 rounds)
    python bench/rope_overhead.py --family voxtral   # the random model of another family (audioflamingo3, voxtral)
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import add_family_arg, bench_model, median, results_name, timed, write_results  # noqa: E402

from vlat.models import family_of_model, find_audio_model, forward_kwargs  # noqa: E402
from vlat.rope import AudioRopeConfig, apply_audio_rope  # noqa: E402


def methods(window: int) -> dict[str, AudioRopeConfig]:
    """The compared settings, with the family's 30-s window in tokens (750; Voxtral 375)."""
    return {
        "vanilla": AudioRopeConfig("vanilla"),
        "partial_yarn": AudioRopeConfig("partial_yarn", original_audio_tokens=window, cutoff_dim=4, temperature=1.2),
        "whole_yarn": AudioRopeConfig("whole_yarn", original_audio_tokens=window),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", help="checkpoint directory (default: --size)")
    ap.add_argument("--size", choices=["full", "tiny"], help="random-weight model; default: full on CUDA, tiny on CPU")
    ap.add_argument("--audio-tokens", type=int, default=15000)
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--tiny", action="store_true", help="smoke run: 1,500 audio tokens, 2 rounds")
    add_family_arg(ap)
    args = ap.parse_args()
    if args.tiny:
        args.audio_tokens, args.rounds, args.size = 1500, 2, "tiny"

    from vlat.models.loading import load_model

    device = "cuda" if torch.cuda.is_available() else "cpu"
    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    args.size = args.size or ("full" if device == "cuda" else "tiny")
    if args.model:
        model = load_model(args.model, dtype=str(dtype).removeprefix("torch.")).to(device).eval()
    else:
        model = bench_model(args.size, device, dtype, "sdpa", family=args.family).eval()
    aid = find_audio_model(model).config.audio_token_id
    family = family_of_model(model)
    per_window = int(family.tokens_for_frames(3000))  # tokens of a whole 30-s window
    if family.whole_recording_features and args.audio_tokens % per_window:
        ap.error(f"--audio-tokens: {family.name} takes whole 30-s windows of {per_window} tokens")
    windows = -(-args.audio_tokens // per_window)
    ids = torch.tensor([[11] * 40 + [aid] * args.audio_tokens + [12] * 200], device=device)
    fmask = torch.zeros(windows, 3000, dtype=torch.long, device=device)
    for w in range(windows):  # frames giving the window's tokens (3000 / per_window frames per token)
        fmask[w, : 3000 * min(per_window, args.audio_tokens - per_window * w) // per_window] = 1
    settings = methods(per_window)
    inputs = forward_kwargs(
        model,
        dict(
            input_ids=ids,
            attention_mask=torch.ones_like(ids),
            input_features=torch.randn(windows, 128, 3000, device=device, dtype=dtype),
            feature_attention_mask=fmask,
        ),
    )

    def run(cfg):
        apply_audio_rope(model, cfg)
        with torch.no_grad():
            model(**inputs)

    for cfg in settings.values():  # warm-up
        run(cfg)
    times: dict[str, list[float]] = {m: [] for m in settings}
    for _ in range(args.rounds):
        for name, cfg in settings.items():
            times[name].append(timed(lambda cfg=cfg: run(cfg)))
    ratios = {
        name: median([t / v for t, v in zip(times[name], times["vanilla"], strict=True)])
        for name in ("partial_yarn", "whole_yarn")
    }
    write_results(
        results_name("rope_overhead", args),
        {
            "audio_tokens": args.audio_tokens,
            "sequence_tokens": ids.shape[1],
            "rounds": args.rounds,
            "model": str(args.model or args.size),
            "family": family_of_model(model).model_type,
            "seconds": times,
            "median_seconds": {k: median(v) for k, v in times.items()},
        },
        {"rope_overhead_whole_yarn": ratios["whole_yarn"], "rope_overhead_partial_yarn": ratios["partial_yarn"]},
    )


if __name__ == "__main__":
    main()
