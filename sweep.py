"""Partial YaRN sweep: accuracy over cutoff_dim x temperature for one length bucket, with a heatmap.

    python sweep.py --model Qwen/Qwen2-Audio-7B-Instruct --data yophis/yodas2-mcqa --split validation \\
        --original-audio-seconds 30 --length 5 --output results/sweep_5min

Defaults: cutoffs 56,48,40,32,24,16,8 and temperatures 0.5..1.6 step 0.1 (the paper's grid, Appendix D.2).
Writes sweep.json (grid + best setting), sweep.csv and heatmap.png into --output.
"""

from __future__ import annotations

import argparse
import sys

from vlat.cliargs import OneLineParser, csv_list


def main(argv: list[str] | None = None) -> int:
    from vlat.evaluation.sweep import DEFAULT_CUTOFFS, DEFAULT_TEMPERATURES

    p = OneLineParser(prog="sweep.py", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True)
    p.add_argument("--adapter", action="append", default=[], help="optional PEFT adapter (one)")
    p.add_argument("--data", required=True)
    p.add_argument("--split", default="test", help="use a validation split, not the test split, to pick settings")
    p.add_argument("--original-audio-seconds", type=float, default=30.0)
    p.add_argument("--length", type=float, required=True, help="length bucket in minutes")
    p.add_argument(
        "--audio-compression", default="none", help="audio-token compression to sweep under: none, pool:K, ltbm:R[:W]"
    )
    p.add_argument("--cutoffs", type=csv_list(int), default=DEFAULT_CUTOFFS)
    p.add_argument("--temperatures", type=csv_list(float), default=DEFAULT_TEMPERATURES)
    p.add_argument("--max-questions", type=int, default=None)
    p.add_argument("--prefill-chunk", type=int, help="tokens per prefill forward (default 4096; 0 = no chunking)")
    p.add_argument("--output", required=True)
    p.add_argument("--no-progress", action="store_true")
    args = p.parse_args(argv)
    if len(args.adapter) > 1:
        p.error("--adapter: the sweep takes at most one adapter")
    from vlat.evaluation import EvalInputError, EvalSpec, Evaluator
    from vlat.evaluation.sweep import check_grid, run_sweep, write_sweep
    from vlat.io import check_output_dir

    spec = EvalSpec(
        model=args.model,
        data=args.data,
        adapters=args.adapter,
        split=args.split,
        methods=["partial_yarn"],
        compressions=[args.audio_compression],
        original_audio_seconds=args.original_audio_seconds,
        lengths=[args.length],
        max_questions=args.max_questions,
        **({"prefill_chunk": args.prefill_chunk} if args.prefill_chunk is not None else {}),
    )
    try:
        check_output_dir(args.output)
        check_grid(args.model, args.cutoffs, args.temperatures)
        ev = Evaluator(spec)
        result = run_sweep(ev, args.length, args.cutoffs, args.temperatures, progress=not args.no_progress)
    except (EvalInputError, ValueError, OSError) as e:
        print(f"sweep.py: error: {e}", file=sys.stderr)
        return 2
    best, tied = result["best"], result["tied"]
    over = f"{100 * best['accuracy']:.2f}% over {result['questions']} questions"
    if len(tied) == 1:
        print(f"best: cutoff_dim {best['cutoff_dim']}, temperature {best['temperature']:g}, accuracy {over}")
    else:
        cells = ", ".join(f"({t['cutoff_dim']}, {t['temperature']:g})" for t in tied[:8])
        more = f" and {len(tied) - 8} more" if len(tied) > 8 else ""
        print(
            f"tie: {len(tied)} of {len(result['cutoffs']) * len(result['temperatures'])} settings reach {over}: "
            f"(cutoff_dim, temperature) {cells}{more}"
        )
    try:
        out = write_sweep(args.output, result)
    except OSError as e:
        print(f"sweep.py: error: --output {args.output}: results not written ({e.strerror or e})", file=sys.stderr)
        return 1
    alike, n_grid = result["indistinguishable_from_best"], len(result["cutoffs"]) * len(result["temperatures"])
    print(
        f"{len(alike)} of {n_grid} settings are not distinguishable from the best (paired 95% intervals over "
        f"{result['recordings']} recordings); see indistinguishable_from_best in sweep.json"
    )
    print(f"wrote {out}/sweep.json, sweep.csv, heatmap.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
