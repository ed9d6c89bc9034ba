"""Compare VLAT sampling strategies (and vanilla fine-tuning) over seeds: train, evaluate, tabulate, plot.

    python compare.py --base-config configs/vlat_default.yaml --strategies default,dense,very_dense,limited,fixed,vanilla \\
        --seeds 0,1,2 --data yophis/yodas2-mcqa --lengths 2,5,10 --output results/strategies

A strategy name with the suffix _per_sample (default_per_sample) draws a virtual factor for every sample instead of
one per batch. Each run trains with the base config (strategy, seeds and output paths replaced) into OUTPUT/runs/<strategy>_seed<N>
and is evaluated under --methods (default vanilla,partial_pi). Finished runs are not redone. Writes
comparison.md (Table 6 / Table 2 layout, mean ± std), comparison.json/csv and accuracy_vs_length.png into OUTPUT.
Extra arguments after -- go to every train.py call (e.g. -- --trainer.max_steps 200).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import yaml

from vlat.cliargs import OneLineParser, csv_list

ROOT = Path(__file__).resolve().parent


def main(argv: list[str] | None = None) -> int:
    from vlat.evaluation.compare import STRATEGIES

    argv = list(sys.argv[1:] if argv is None else argv)
    extra = argv[argv.index("--") + 1 :] if "--" in argv else []
    argv = argv[: argv.index("--")] if "--" in argv else argv
    p = OneLineParser(prog="compare.py", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--base-config", required=True, help="training config the runs derive from")
    p.add_argument("--strategies", type=csv_list(str), default=STRATEGIES)
    p.add_argument("--seeds", type=csv_list(int), default=[0, 1, 2])
    p.add_argument("--data", help="evaluation data (default: the base config's data.source)")
    p.add_argument("--split", default="test")
    p.add_argument("--methods", type=csv_list(str), default=["vanilla", "partial_pi"])
    p.add_argument("--lengths", type=csv_list(float), default=[2.0, 5.0, 10.0])
    p.add_argument("--original-audio-seconds", type=float, default=30.0)
    p.add_argument("--max-questions", type=int, default=None)
    p.add_argument("--output", required=True)
    args = p.parse_args(argv)
    from vlat.evaluation.compare import parse_strategy

    try:
        [parse_strategy(s) for s in args.strategies]
    except ValueError as e:
        p.error(str(e))
    try:
        base = yaml.safe_load(open(args.base_config))
    except OSError as e:
        p.error(f"--base-config {args.base_config}: {e.strerror}")
    from vlat.errors import ConfigError
    from vlat.evaluation import EvalInputError, EvalSpec
    from vlat.evaluation.compare import (
        aggregate_seeds,
        comparison_table,
        evaluate_run,
        pooled_and_paired,
        run_predictions,
        train_run,
        write_comparison,
    )
    from vlat.evaluation.runner import validate
    from vlat.io import check_output_dir

    model = base.get("model", {}).get("model_name_or_path", "Qwen/Qwen2-Audio-7B-Instruct")
    spec = EvalSpec(
        model=model,
        data=args.data or base.get("data", {}).get("source"),
        split=args.split,
        methods=args.methods,
        compressions=[base.get("model", {}).get("audio_compression", "none")],  # as the adapters were trained
        lengths=args.lengths,
        original_audio_seconds=args.original_audio_seconds,
        max_questions=args.max_questions,
    )
    try:
        validate(spec)
        check_output_dir(args.output)
    except ConfigError as e:
        p.error(str(e))
    out = Path(args.output)
    per_run, preds = [], {}
    try:
        for strategy in args.strategies:
            for seed in args.seeds:
                run_dir = out / "runs" / f"{strategy}_seed{seed}"
                print(
                    f"[compare] {strategy} seed {seed}: {'done, reusing' if (run_dir / 'done.json').exists() else 'training'}"
                )
                adapter = train_run(base, strategy, seed, run_dir, extra, ROOT)
                for row in evaluate_run(spec, adapter, strategy, run_dir):
                    per_run.append({**row, "strategy": strategy, "seed": seed})
                preds[strategy, seed] = run_predictions(run_dir)
    except (EvalInputError, RuntimeError, OSError) as e:
        print(f"compare.py: error: {e}", file=sys.stderr)
        return 2
    agg = aggregate_seeds(per_run)
    pooled, paired = pooled_and_paired(preds)
    print(comparison_table(agg), end="")
    try:
        write_comparison(out, agg, per_run, pooled, paired)
    except OSError as e:
        print(f"compare.py: error: --output {out}: comparison not written ({e.strerror or e})", file=sys.stderr)
        return 1
    print(f"wrote {out}/comparison.md, comparison.json, comparison.csv, accuracy_vs_length.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
