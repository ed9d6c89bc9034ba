"""Evaluate Qwen2-Audio (+ LoRA adapters) on long-audio MCQA under several RoPE methods and audio lengths.

    python evaluate.py --model Qwen/Qwen2-Audio-7B-Instruct --adapter runs/vlat_default/checkpoints/last.ckpt \\
        --data yophis/yodas2-mcqa --methods vanilla,partial_pi --lengths 1,2,5,10 --output results/vlat_default

Writes results.json, results.csv, results.md (paper layout) and predictions.jsonl into --output, all at the end and
all at once (each is a link through --output/.current, switched in one step; the output is checked first).
Options can also come from a YAML file (--config eval.yaml, keys = option names with underscores).
"""

from __future__ import annotations

import argparse
import sys

import yaml

from vlat.cliargs import OneLineParser, csv_list


def build_parser() -> argparse.ArgumentParser:
    p = OneLineParser(prog="evaluate.py", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", help="YAML file with any of these options")
    p.add_argument("--model", help="base model: hub id or local directory")
    p.add_argument("--adapter", action="append", default=[], help="PEFT adapter dir or .ckpt; LABEL=PATH; repeatable")
    p.add_argument("--data", help="hub dataset id, local mirror of its layout, local directory or table file")
    p.add_argument("--split", default="test")
    p.add_argument(
        "--methods",
        type=csv_list(str),
        default=["vanilla", "partial_pi"],
        help="comma-separated: vanilla, partial_pi, partial_yarn, whole_pi, whole_yarn",
    )
    p.add_argument(
        "--audio-compression",
        type=csv_list(str),
        default=["none"],
        help="comma-separated audio-token compression settings, each evaluated: none, pool:K, ltbm:R[:W|:global]",
    )
    p.add_argument("--original-audio-seconds", type=float, default=30.0, help="familiar window (30 s; 120 = observed)")
    p.add_argument("--cutoff-dim", type=int, default=0, help="Partial YaRN cutoff (partial_yarn only)")
    p.add_argument("--temperature", type=float, default=1.0, help="Partial YaRN temperature (partial_yarn only)")
    p.add_argument(
        "--lengths",
        type=csv_list(float),
        default=None,
        help="buckets in minutes (0.5 ok); default: every length the data has (its clip-length folders, else "
        "0.5,1,2,5,10,15,20,30,45,60); without folders a recording is in L when within --length-tolerance of it",
    )
    p.add_argument(
        "--length-tolerance",
        type=float,
        default=0.1,
        help="without clip-length folders: a recording is in bucket L when its duration is within this share of L",
    )
    p.add_argument("--scoring", choices=["logits", "generate"], default="logits")
    p.add_argument(
        "--prefill-chunk",
        type=int,
        help="tokens per prefill forward (bounds activation memory at any length; default 4096; 0 = no chunking)",
    )
    p.add_argument("--max-new-tokens", type=int, help="reply length limit of --scoring generate (default 24)")
    p.add_argument("--max-questions", type=int, default=None, help="stop after this many questions (quick checks)")
    p.add_argument(
        "--max-audio-seconds",
        type=float,
        default=900.0,
        help="recordings longer than this are skipped (from their header, before decoding), as in training; inf = none",
    )
    p.add_argument(
        "--compare",
        type=csv_list(str),
        help="paired differences A:B of two methods, compression settings or adapter labels on the same questions "
        "(default: every method against vanilla)",
    )
    p.add_argument(
        "--allow-other-base",
        action="store_true",
        help="evaluate adapters recorded as trained on another base model (refused otherwise)",
    )
    p.add_argument("--dtype", default="auto")
    p.add_argument("--attn-implementation", default="auto")
    p.add_argument("--output", help="output directory")
    p.add_argument("--no-progress", action="store_true")
    return p


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.config:
        try:
            conf = yaml.safe_load(open(args.config)) or {}
        except OSError as e:
            parser.error(f"--config {args.config}: {e.strerror}")
        known = {a.dest for a in parser._actions}
        unknown = sorted(set(conf) - known)
        if unknown:
            parser.error(f"--config {args.config}: unknown keys {unknown}")
        for key in ("methods", "lengths", "audio_compression", "compare"):
            if isinstance(conf.get(key), str | int | float):
                conf[key] = parser._option_string_actions[f"--{key}"].type(str(conf[key]))
        if isinstance(conf.get("adapter"), str):
            conf["adapter"] = [conf["adapter"]]
        parser.set_defaults(**conf)
        args = parser.parse_args(argv)
    for required in ("model", "data", "output"):
        if not getattr(args, required):
            parser.error(f"--{required} is required")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from vlat.errors import ConfigError
    from vlat.evaluation import EvalSpec, Evaluator, write_outputs
    from vlat.evaluation.report import results_markdown
    from vlat.evaluation.tables import aggregate, paired
    from vlat.io import check_output_dir

    spec = EvalSpec(
        model=args.model,
        data=args.data,
        adapters=args.adapter,
        split=args.split,
        methods=args.methods,
        compressions=args.audio_compression,
        original_audio_seconds=args.original_audio_seconds,
        cutoff_dim=args.cutoff_dim,
        temperature=args.temperature,
        lengths=args.lengths,
        length_tolerance=args.length_tolerance,
        scoring=args.scoring,
        **{k: getattr(args, k) for k in ("max_new_tokens", "prefill_chunk") if getattr(args, k) is not None},
        max_questions=args.max_questions,
        max_audio_seconds=args.max_audio_seconds,
        allow_other_base=args.allow_other_base,
        compare=args.compare,
        dtype=args.dtype,
        attn_implementation=args.attn_implementation,
    )
    try:
        check_output_dir(args.output)
        evaluator = Evaluator(spec)
    except (ConfigError, OSError) as e:
        print(f"evaluate.py: error: {e}", file=sys.stderr)
        return 2
    for warning in evaluator.training_warnings:
        print(f"evaluate.py: warning: {warning}", file=sys.stderr)
    preds, rows = evaluator.run(progress=not args.no_progress)
    skipped = evaluator.skipped
    if skipped:
        reasons = ", ".join(f"{k}: {v}" for k, v in evaluator.skipped_by_reason.items())
        print(
            f"evaluate.py: skipped {len(skipped)} questions ({reasons}); each is named in results.json", file=sys.stderr
        )
    if evaluator.left_out:
        durations = ", ".join(f"{d:g} s: {n}" for d, n in sorted(evaluator.left_out.items()))
        print(
            f"evaluate.py: left out {sum(evaluator.left_out.values())} questions whose recordings are in no requested "
            f"length bucket ({durations}); buckets: {', '.join(f'{b:g}' for b in evaluator.buckets)} min",
            file=sys.stderr,
        )
    if not preds:
        print(
            f"evaluate.py: error: no question could be scored ({len(skipped)} skipped, "
            f"{sum(evaluator.memory_skipped.values())} beyond memory); {args.output} is left as it was",
            file=sys.stderr,
        )
        return 1
    meta = {
        "spec": {k: v for k, v in vars(args).items() if k != "no_progress"},
        "skipped_questions": len(skipped),
        "skipped_by_reason": evaluator.skipped_by_reason,
        "buckets_min": evaluator.buckets,
        "left_out_questions": sum(evaluator.left_out.values()),
        "left_out_by_duration_s": {f"{d:g}": n for d, n in sorted(evaluator.left_out.items())},
        "skipped": skipped,
        "memory_skipped": {f"{k:g}": v for k, v in evaluator.memory_skipped.items()},
        "adapter_training": evaluator.adapter_training,  # each adapter's recorded training settings (None: unrecorded)
    }
    paired_rows, category_rows = paired(preds, evaluator.pairs), aggregate(preds, by_category=True)
    print(results_markdown(rows, paired_rows, category_rows), end="")  # first: the results survive a failed write
    for warning in evaluator.empty_buckets(preds):
        print(f"evaluate.py: warning: {warning}", file=sys.stderr)
    try:
        out = write_outputs(args.output, rows, preds, meta, paired_rows, category_rows)
    except OSError as e:
        print(f"evaluate.py: error: --output {args.output}: results not written ({e.strerror or e})", file=sys.stderr)
        return 1
    print(f"wrote {out}/results.json, results.csv, results.md, predictions.jsonl")
    for message in evaluator.memory_messages:
        print(f"evaluate.py: error: {message}", file=sys.stderr)
    return 1 if evaluator.memory_messages else 0


if __name__ == "__main__":
    sys.exit(main())
