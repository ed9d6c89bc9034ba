"""``python -m vlat.testing tiny-model DIR [--family F]`` / ``python -m vlat.testing base-model DIR [--steps N]`` /
``python -m vlat.testing full-model DIR [--family F] [--layers N]`` /
``python -m vlat.testing synth-data DIR --durations 30,60,120
[--layout yodas2]`` / ``python -m vlat.testing smoke [DIR]``."""

from __future__ import annotations

import argparse
import sys

from vlat.cliargs import OneLineParser
from vlat.testing.base_model import BaseModelConfig, write_base_model
from vlat.testing.synth_data import SynthConfig, write_smoke_fixtures, write_synth_dataset
from vlat.testing.tiny_model import FAMILIES, TinyModelConfig, write_tiny_model


def _floats(text: str) -> tuple[float, ...]:
    try:
        return tuple(float(x) for x in text.split(",") if x.strip())
    except ValueError as e:
        raise argparse.ArgumentTypeError(f"expected comma-separated seconds, got {text!r}") from e


def main(argv: list[str] | None = None) -> int:
    parser = OneLineParser(prog="python -m vlat.testing", description=__doc__)
    sub = parser.add_subparsers(dest="cmd", required=True, parser_class=OneLineParser)
    tm = sub.add_parser("tiny-model", help="write a tiny random checkpoint directory (Qwen2-Audio, or --family)")
    tm.add_argument("dir")
    tm.add_argument("--seed", type=int, default=0)
    tm.add_argument("--family", choices=FAMILIES, default="qwen2_audio")
    bm = sub.add_parser("base-model", help="train a tiny Qwen2-Audio that hears (clips <= 30 s) and write it")
    bm.add_argument("dir")
    bm.add_argument("--steps", type=int, default=BaseModelConfig.steps, help="question-answering steps")
    bm.add_argument("--seed", type=int, default=0)
    sd = sub.add_parser("synth-data", help="write a synthetic long-audio MCQA dataset")
    sd.add_argument("dir")
    sd.add_argument("--durations", type=_floats, default=SynthConfig.durations, help="seconds, comma-separated")
    sd.add_argument("--videos-per-duration", type=int, default=SynthConfig.videos_per_duration)
    sd.add_argument("--segments-per-video", type=int, default=SynthConfig.segments_per_video)
    sd.add_argument("--test-fraction", type=float, default=SynthConfig.test_fraction)
    sd.add_argument("--seed", type=int, default=0)
    sd.add_argument(
        "--layout", choices=["jsonl", "yodas2"], default="jsonl", help="yodas2: the published parquet layout"
    )
    sd.add_argument("--shards", type=int, default=SynthConfig.shards, help="yodas2: shards per split and length")
    sd.add_argument("--overwrite", action="store_true", help="replace a non-empty DIR")
    fm = sub.add_parser("full-model", help="write a random checkpoint of a family's published widths (offline runs)")
    fm.add_argument("dir")
    fm.add_argument("--family", choices=FAMILIES, default="qwen2_audio")
    fm.add_argument("--layers", type=int, help="language-model layers (default: the published depth)")
    fm.add_argument("--audio-layers", type=int, help="audio-encoder layers (default: the published depth, 32)")
    fm.add_argument("--dtype", choices=["bfloat16", "float32"], default="bfloat16")
    fm.add_argument("--seed", type=int, default=0)
    sm = sub.add_parser(
        "smoke", help="write DIR/base-model (trained, a few minutes) and DIR/synth-data: what configs/smoke.yaml uses"
    )
    sm.add_argument("dir", nargs="?", default=".smoke")
    args = parser.parse_args(argv)
    try:
        if args.cmd == "smoke":
            out = write_smoke_fixtures(args.dir)
        elif args.cmd == "full-model":
            import torch

            from vlat.testing.full_size import write_full_model

            for name in ("layers", "audio_layers"):
                if getattr(args, name) is not None and getattr(args, name) < 1:
                    raise ValueError(f"--{name.replace('_', '-')}: {getattr(args, name)} must be >= 1")
            dtype = getattr(torch, args.dtype)
            out = write_full_model(args.dir, args.layers, args.audio_layers, dtype, args.seed, args.family)
        elif args.cmd == "base-model":
            if args.steps < 1:
                raise ValueError(f"--steps: {args.steps} must be >= 1")
            out = write_base_model(args.dir, BaseModelConfig(steps=args.steps, seed=args.seed))
        elif args.cmd == "tiny-model":
            out = write_tiny_model(args.dir, TinyModelConfig(seed=args.seed), family=args.family)
        else:
            cfg = SynthConfig(
                durations=args.durations,
                videos_per_duration=args.videos_per_duration,
                segments_per_video=args.segments_per_video,
                test_fraction=args.test_fraction,
                seed=args.seed,
                layout=args.layout,
                shards=args.shards,
            )
            out = write_synth_dataset(args.dir, cfg, overwrite=args.overwrite)
    except (ValueError, OSError) as e:
        print(f"{parser.prog} {args.cmd}: error: {e}", file=sys.stderr)
        return 2
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
