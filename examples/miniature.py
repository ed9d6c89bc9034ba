"""The paper's experiment in miniature, on CPU (arXiv 2510.15231, Tables 1, 2 and 6; write-up: docs/miniature.md).

    python examples/miniature.py --output runs/miniature               # the whole miniature (within an hour, 2 cores)
    python examples/miniature.py --output /tmp/miniature --tiny       # a few minutes: every stage, small sizes (CI)
    python examples/miniature.py --output runs/miniature --docs docs/miniature.md   # also write the docs page

A tiny Qwen2-Audio that has heard only clips of at most 30 s (``python -m vlat.testing base-model``) stands in for
Qwen2-Audio-7B-Instruct, synthetic questions whose evidence can sit anywhere in a recording
(:data:`vlat.testing.synth_data.BASE_TASK`) for YODAS2-MCQA:

- **Reference listeners** (:mod:`vlat.testing.listeners`, no model): chance, only the first 30 s, only the last
  30 s, the whole recording, per length and question kind; and a **deaf control**: the base model on 30-s test
  recordings whose audio is replaced by their background noise.
- **Table 1** (training-free extension): the base model at every length under vanilla, Partial PI, Partial YaRN
  (cutoff and temperature swept with ``sweep.py`` on the validation split, per length), Whole PI and Whole YaRN,
  stretching from the original 30-s window and from the *observed* window: the longest length at which vanilla
  accuracy on the validation split stays within ``--observed-tolerance`` of its 30-s accuracy (§5.1), and from
  fixed longer windows (1 minute), so that anchoring is compared even when the observed window is the original.
- **Tables 2 and 6** (fine-tuning): LoRA on 1-minute clips with vanilla fine-tuning and VLAT (default, dense, very
  dense, limited, fixed strategies, and the default strategy with a virtual factor per sample instead of per
  batch), over seeds, evaluated at longer lengths under vanilla and Partial PI inference, through ``compare.py``.

Every cell carries its questions, recordings, durations and 95% interval; the paper's claims are checked against
paired intervals (:mod:`miniature_analysis`). Every stage runs the package's own commands (``evaluate.py``,
``sweep.py``, ``compare.py``, ``train.py``) as a user would; their outputs stay under OUTPUT with a log per stage in
OUTPUT/logs/. Resumable: the base model and datasets are reused when made with the same settings, a stage whose
command line is unchanged and finished is not run again, and ``compare.py`` reuses finished runs. Writes
OUTPUT/miniature.json (settings, commands, timings, every number) and OUTPUT/miniature.md (the tables).
"""

from __future__ import annotations

import argparse
import json
import shlex
import shutil
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "bench")]  # a checkout without `pip install -e .` still runs

import miniature_analysis as analysis  # noqa: E402  (examples/: the numbers from the runs' predictions)
import miniature_report as report  # noqa: E402  (examples/: the tables and the docs page)
from common import machine  # noqa: E402  (bench/common.py: the machine description the benchmarks record)

from vlat.cliargs import OneLineParser  # noqa: E402
from vlat.io import check_output_dir, write_json_atomic, write_text_atomic  # noqa: E402
from vlat.testing.base_model import RECORD, BaseModelConfig  # noqa: E402
from vlat.testing.synth_data import BASE_TASK, SynthConfig  # noqa: E402

TABLE1_METHODS = ["vanilla", "partial_pi", "partial_yarn", "whole_pi", "whole_yarn"]


@dataclass(frozen=True)
class Plan:
    """Sizes of one miniature; :data:`FULL` is the write-up's, :data:`TINY` the CI's."""

    lengths: tuple[float, ...] = (0.5, 1.0, 2.0, 5.0)  # minutes: Table 1 lengths (0.5 = the original window)
    test_recordings: int = 40  # per length (x 2 questions)
    validation_recordings: int = 16  # per length: the sweep and the observed window are chosen on these
    extra_windows: tuple[float, ...] = (1.0,)  # minutes: Table 1 also stretches from these windows
    train_recordings: int = 150  # 1-minute clips (x 2 questions) for fine-tuning
    train_minutes: float = 1.0
    cutoffs: tuple[int, ...] = (2, 4, 6)  # Partial YaRN grid (the tiny model's head_dim is 16: 8 frequency pairs)
    temperatures: tuple[float, ...] = (0.6, 0.8, 1.0, 1.2, 1.4, 1.6)
    strategies: tuple[str, ...] = (
        "vanilla", "default", "dense", "very_dense", "limited", "fixed", "default_per_sample"
    )  # fmt: skip
    seeds: tuple[int, ...] = (0, 1, 2)
    table2_lengths: tuple[float, ...] = (1.0, 2.0, 5.0)
    steps: int = 75  # optimizer steps of each fine-tuning run (batch 4: one pass over the training questions)
    learning_rate: float = 1e-3
    deaf_recordings: int = 60  # 30-s recordings (x 2 questions) of the deaf control
    base: BaseModelConfig = field(default_factory=BaseModelConfig)


FULL = Plan()
TINY = Plan(
    lengths=(0.5, 1.0, 2.0),
    test_recordings=8,
    validation_recordings=2,
    train_recordings=12,
    cutoffs=(2, 6),
    temperatures=(0.8, 1.2),
    strategies=("vanilla", "default", "default_per_sample"),
    seeds=(0, 1),
    table2_lengths=(1.0, 2.0),
    steps=6,  # >= log_every_n_steps (5), so the virtual factors reach TensorBoard
    deaf_recordings=30,
)


def datasets(plan: Plan) -> dict[str, SynthConfig]:
    """Training clips (one length) and evaluation recordings (every length; test and validation videos)."""
    n_eval = plan.test_recordings + plan.validation_recordings
    return {
        "train": replace(
            BASE_TASK,
            durations=(60.0 * plan.train_minutes,),
            videos_per_duration=plan.train_recordings,
            segments_per_video=1,
            test_fraction=0.0,
            seed=1,
        ),
        "eval": replace(
            BASE_TASK,
            durations=tuple(60.0 * m for m in plan.lengths),
            videos_per_duration=n_eval,
            segments_per_video=1,
            test_fraction=plan.test_recordings / n_eval,
            validation_fraction=plan.validation_recordings / n_eval,
            seed=2,
        ),
        "deaf_source": replace(
            BASE_TASK,
            durations=(30.0,),
            videos_per_duration=plan.deaf_recordings,
            segments_per_video=1,
            test_fraction=1.0,
            seed=3,
        ),  # fmt: skip
    }


def csv(values) -> str:
    return ",".join(f"{v:g}" if isinstance(v, float) else str(v) for v in values)


def observed_window(vanilla: dict[float, float], tolerance: float) -> float:
    """§5.1's observed window: the longest length up to which vanilla accuracy stays within ``tolerance`` of its
    accuracy at the shortest length (the original window). ``vanilla``: minutes -> accuracy."""
    lengths = sorted(vanilla)
    ref = vanilla[lengths[0]]
    window = lengths[0]
    for length in lengths[1:]:
        if vanilla[length] < ref - tolerance:
            break
        window = length
    return window


def accuracies(results_json: Path, **match) -> dict[float, float]:
    """minutes -> accuracy of the rows of an ``evaluate.py`` results.json that match ``match``."""
    rows = json.loads(results_json.read_text())["results"]
    return {r["length_min"]: r["accuracy"] for r in rows if all(r[k] == v for k, v in match.items())}


class Runner:
    """Runs each stage's command once: a stage is skipped when it finished with the same command line and the same
    inputs (``context``: the base model's and the datasets' settings; a stage may add its own, e.g. a config file)."""

    def __init__(self, out: Path, context: dict):
        self.out = out
        self.context = json.loads(json.dumps(context))
        self.stages: list[dict] = []
        (out / "logs").mkdir(parents=True, exist_ok=True)
        (out / "stages").mkdir(exist_ok=True)

    def run(self, name: str, argv: list[str], result: Path, inputs: str | None = None) -> None:
        """Run ``python argv...`` from the repository root unless it already ran with these inputs and left
        ``result``."""
        context = {**self.context, "inputs": inputs}
        marker = self.out / "stages" / f"{name}.json"
        shown = " ".join(shlex.quote(a) for a in ["python", *argv])
        try:
            done = json.loads(marker.read_text())
        except (OSError, ValueError):
            done = None
        if done is not None and (done["argv"], done.get("context")) == (argv, context) and result.exists():
            print(f"[miniature] {name}: done, reusing ({done['seconds']:.0f} s)", flush=True)
            self.stages.append(done)
            return
        print(f"[miniature] {name}: {shown}", flush=True)
        t0 = time.perf_counter()
        with open(self.out / "logs" / f"{name}.log", "w") as log:
            res = subprocess.run([sys.executable, *argv], cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
        seconds = time.perf_counter() - t0
        if res.returncode != 0:
            raise RuntimeError(f"stage {name} failed (exit {res.returncode}; log: {self.out / 'logs' / name}.log)")
        record = {"stage": name, "argv": argv, "command": shown, "seconds": round(seconds, 1), "context": context}
        write_json_atomic(marker, record)
        self.stages.append(record)
        print(f"[miniature] {name}: {seconds:.0f} s", flush=True)


def ensure_fixtures(out: Path, plan: Plan, base_model: str | None) -> tuple[Path, dict[str, Path], dict]:
    from vlat.testing.base_model import ensure_base_model
    from vlat.testing.synth_data import ensure_synth_dataset, write_deaf_copy

    timings = {}
    if base_model is None:
        base = out / "base-model"
        t0 = time.perf_counter()
        print("[miniature] base model (reused when made with these settings)", flush=True)
        ensure_base_model(base, plan.base, progress=lambda m: print(f"  {m}", flush=True))
        timings["base_model"] = round(time.perf_counter() - t0, 1)
    else:
        base = Path(base_model)
    data = {}
    t0 = time.perf_counter()
    for name, cfg in datasets(plan).items():
        data[name] = out / "data" / name
        remade = ensure_synth_dataset(data[name], cfg)
        if name == "deaf_source" and (remade or not (out / "data" / "deaf").is_dir()):
            shutil.rmtree(out / "data" / "deaf", ignore_errors=True)
            write_deaf_copy(data[name], out / "data" / "deaf")  # the same questions, the audio only noise
    data["deaf"] = out / "data" / "deaf"
    timings["datasets"] = round(time.perf_counter() - t0, 1)
    return base, data, timings


def table1(run: Runner, out: Path, plan: Plan, base: Path, eval_data: Path, tolerance: float) -> dict:
    """Training-free extension of the base model (Table 1), from the original and the observed window."""
    lengths = csv(plan.lengths)
    common = ["--model", str(base), "--data", str(eval_data), "--no-progress"]
    run.run(
        "observe_vanilla",
        ["evaluate.py", *common, "--split", "validation", "--methods", "vanilla", "--lengths", lengths,
         "--output", str(out / "table1" / "observe_vanilla")],
        out / "table1" / "observe_vanilla" / "results.json",
    )  # fmt: skip
    vanilla_val = accuracies(out / "table1" / "observe_vanilla" / "results.json", method="vanilla")
    observed = observed_window(vanilla_val, tolerance)
    anchors = {"original": plan.lengths[0], "observed": observed, **{f"{w:g} min": w for w in plan.extra_windows}}
    result: dict = {"observed_window_min": observed, "validation_vanilla": vanilla_val, "anchors": {}}
    for anchor, window in anchors.items():
        same = next((a for a, r in result["anchors"].items() if r["window_min"] == window), None)
        if same is not None:
            result["anchors"][anchor] = {"window_min": window, "same_as": same}
            continue
        seconds = f"{60 * window:g}"
        tag = f"{anchor.replace(' min', 'min')}_{seconds}s"
        run.run(
            f"table1_{tag}",
            ["evaluate.py", *common, "--methods", "vanilla,partial_pi,whole_pi,whole_yarn", "--lengths", lengths,
             "--original-audio-seconds", seconds, "--output", str(out / "table1" / tag)],
            out / "table1" / tag / "results.json",
        )  # fmt: skip
        res = out / "table1" / tag / "results.json"
        table = {m: accuracies(res, method=m) for m in ("vanilla", "partial_pi", "whole_pi", "whole_yarn")}
        yarn, chosen = {}, {}
        for length in plan.lengths:
            if length <= window:  # nothing to stretch: Partial YaRN leaves the audio as it is (= vanilla)
                yarn[length] = table["vanilla"][length]
                continue
            sweep_dir = out / "table1" / f"sweep_{tag}_{length:g}min"
            run.run(
                f"sweep_{tag}_{length:g}min",
                ["sweep.py", "--model", str(base), "--data", str(eval_data), "--split", "validation",
                 "--original-audio-seconds", seconds, "--length", f"{length:g}", "--cutoffs", csv(plan.cutoffs),
                 "--temperatures", csv(plan.temperatures), "--no-progress", "--output", str(sweep_dir)],
                sweep_dir / "sweep.json",
            )  # fmt: skip
            sweep = json.loads((sweep_dir / "sweep.json").read_text())
            best = sweep["best"]
            chosen[length] = {**best, "tied_settings": len(sweep["tied"]), "validation_questions": sweep["questions"]}
            yarn_dir = out / "table1" / f"partial_yarn_{tag}_{length:g}min"
            run.run(
                f"partial_yarn_{tag}_{length:g}min",
                ["evaluate.py", *common, "--methods", "partial_yarn", "--lengths", f"{length:g}",
                 "--original-audio-seconds", seconds, "--cutoff-dim", str(best["cutoff_dim"]),
                 "--temperature", f"{best['temperature']:g}", "--output", str(yarn_dir)],
                yarn_dir / "results.json",
            )  # fmt: skip
            yarn[length] = accuracies(yarn_dir / "results.json", method="partial_yarn")[length]
        table["partial_yarn"] = yarn
        preds = analysis.predictions(res.parent / "predictions.jsonl")
        for length in chosen:
            preds += analysis.predictions(out / "table1" / f"partial_yarn_{tag}_{length:g}min" / "predictions.jsonl")
        questions = {r["length_min"]: r["questions"] for r in json.loads(res.read_text())["results"]}
        result["anchors"][anchor] = {
            "window_min": window,
            "accuracy": {m: table[m] for m in TABLE1_METHODS},
            "partial_yarn_settings": chosen,
            "test_questions": questions,
            "cells": analysis.cells(preds),
            "paired_vs_vanilla": analysis.paired(preds, [(m, "vanilla") for m in TABLE1_METHODS[1:]]),
            "by_kind": analysis.kinds(preds),
        }
        result.setdefault("predictions", []).extend({**p, "method": f"{p['method']}@{window:g}"} for p in preds)
    return result


def deaf_control(run: Runner, out: Path, base: Path, deaf: Path) -> dict:
    """The base model on 30-s recordings whose audio is only their background noise: it must score at chance."""
    res = out / "deaf" / "results.json"
    run.run(
        "deaf_control",
        ["evaluate.py", "--model", str(base), "--data", str(deaf), "--methods", "vanilla", "--lengths", "0.5",
         "--no-progress", "--output", str(res.parent)],
        res,
    )  # fmt: skip
    (cell,) = json.loads(res.read_text())["results"]
    return cell


def table2(run: Runner, out: Path, plan: Plan, base: Path, data: dict[str, Path]) -> dict:
    """LoRA fine-tuning on 1-minute clips: vanilla fine-tuning vs VLAT strategies over seeds (Tables 2 and 6)."""
    import yaml

    cfg = yaml.safe_load((ROOT / "configs" / "smoke.yaml").read_text())
    trainer = cfg["trainer"]
    trainer["max_steps"] = plan.steps
    for key in ("val_check_interval", "limit_val_batches"):
        trainer.pop(key, None)
    for cb in trainer["callbacks"]:
        if cb["class_path"].endswith("AdapterCheckpoint"):
            cb["init_args"]["every_n_train_steps"] = plan.steps
    cfg["model"].update(model_name_or_path=str(base), learning_rate=plan.learning_rate)
    cfg["data"].update(source=str(data["train"]), val_split=None, val_lengths=None)
    base_config = out / "table2" / "train_base.yaml"
    base_config.parent.mkdir(parents=True, exist_ok=True)
    text = yaml.safe_dump(cfg, sort_keys=False)
    if not base_config.exists() or base_config.read_text() != text:  # compare.py retrains runs whose config changed
        write_text_atomic(base_config, text)
    run.run(
        "table2_compare",
        ["compare.py", "--base-config", str(base_config), "--strategies", ",".join(plan.strategies),
         "--seeds", csv(plan.seeds), "--data", str(data["eval"]), "--split", "test",
         "--methods", "vanilla,partial_pi", "--lengths", csv(plan.table2_lengths), "--original-audio-seconds", "30",
         "--output", str(out / "table2")],
        out / "table2" / "comparison.json",
        inputs=text,
    )  # fmt: skip
    from vlat.evaluation.compare import run_predictions

    result = json.loads((out / "table2" / "comparison.json").read_text())
    runs = {
        (s, seed): run_predictions(out / "table2" / "runs" / f"{s}_seed{seed}")
        for s in plan.strategies
        for seed in plan.seeds
    }
    tagged = analysis.tagged_runs(runs)
    others = [s for s in plan.strategies if s not in ("vanilla", "default")]
    result["partial_pi_vs_vanilla_inference"] = analysis.paired(tagged, [("partial_pi", "vanilla")])
    result["strategies_vs_default"] = analysis.paired(tagged, [(s, "default") for s in others])
    result["by_kind"] = analysis.kinds(tagged)
    result["predictions"] = tagged
    return result


def claims(plan: Plan, table1_preds: list[dict], table2_preds: list[dict]) -> list[dict]:
    """The paper's claims, each with its paired interval and verdict (:mod:`miniature_analysis`)."""
    longer = plan.extra_windows[0] if plan.extra_windows else None
    t1 = analysis.table1_claims(list(plan.lengths), plan.lengths[0], longer)
    t2 = analysis.table2_claims(list(plan.table2_lengths), list(plan.strategies), plan.train_minutes)
    return analysis.check_claims(t1, table1_preds) + analysis.check_claims(t2, table2_preds)


def main(argv: list[str] | None = None) -> int:
    p = OneLineParser(prog="miniature.py", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--output", required=True, help="directory for fixtures, runs and results (resumable)")
    p.add_argument("--tiny", action="store_true", help="every stage at CI sizes (a few minutes)")
    p.add_argument(
        "--base-model", help="an existing base model (python -m vlat.testing base-model) instead of training one"
    )
    p.add_argument("--observed-tolerance", type=float, default=0.1, help="accuracy drop that ends the observed window")
    p.add_argument("--docs", help="also write the docs page (docs/miniature.md) from this run's miniature.json")
    args = p.parse_args(argv)
    plan = TINY if args.tiny else FULL
    if args.base_model is not None and not (Path(args.base_model) / RECORD).is_file():
        p.error(f"--base-model {args.base_model}: no {RECORD} (make one with python -m vlat.testing base-model DIR)")
    if not 0 <= args.observed_tolerance < 1:
        p.error(f"--observed-tolerance: {args.observed_tolerance} is outside [0, 1)")
    from vlat.errors import ConfigError

    try:
        out = check_output_dir(args.output)
    except ConfigError as e:
        p.error(str(e))
    out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    try:
        base, data, timings = ensure_fixtures(out, plan, args.base_model)
        record = json.loads((base / RECORD).read_text())
        context = {"base_model": record["config"], "datasets": {k: asdict(v) for k, v in datasets(plan).items()}}
        run = Runner(out, context)
        t1 = table1(run, out, plan, base, data["eval"], args.observed_tolerance)
        deaf = deaf_control(run, out, base, data["deaf"])
        t2 = table2(run, out, plan, base, data)
        from vlat.testing.listeners import listen, summarize

        listeners = summarize(listen(data["eval"], "test"))
    except (RuntimeError, OSError) as e:
        print(f"miniature.py: error: {e}", file=sys.stderr)
        return 1
    timings.update({s["stage"]: s["seconds"] for s in run.stages})
    timings["total_this_invocation"] = round(time.perf_counter() - started, 1)
    # the whole miniature's compute, also when this invocation reused finished stages: the base model's training
    # (its record), the datasets and every stage as measured when it ran
    timings["sum_of_stages"] = round(
        record["train_seconds"] + timings["datasets"] + sum(s["seconds"] for s in run.stages), 1
    )
    summary = {
        "variant": "tiny" if args.tiny else "full",
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d"),
        "machine": machine(),
        "plan": json.loads(json.dumps(asdict(plan))),
        "observed_tolerance": args.observed_tolerance,
        "base_model": {
            "path": str(base),
            "accuracy_30s": record["accuracy_30s"],
            "questions": record.get("accuracy_30s_questions", plan.base.eval_recordings * 2),
        },
        "commands": [s["command"] for s in run.stages],
        "timings": timings,
        "listeners": listeners,
        "deaf_control": deaf,
        "claims": claims(plan, t1.pop("predictions"), t2.pop("predictions")),
        "table1": t1,
        "table2": t2,
    }
    write_json_atomic(out / "miniature.json", summary)
    text = report.render(summary)
    write_text_atomic(out / "miniature.md", text)
    print(text)
    print(f"wrote {out}/miniature.json, miniature.md")
    if args.docs:
        write_text_atomic(Path(args.docs), report.docs_page(summary, text))
        print(f"wrote {args.docs}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
