"""Strategy comparison (Table 6 / Table 2 layout): train every VLAT strategy and vanilla fine-tuning for several
seeds, evaluate each checkpoint under vanilla and Partial PI inference, aggregate mean ± std over seeds.

Resumable: a run whose ``done.json`` exists is not trained again unless its training arguments changed, and its
``eval/results.json`` is reused unless the evaluation settings changed.
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
from collections import defaultdict
from dataclasses import asdict
from itertools import count
from pathlib import Path

import yaml

from vlat.evaluation.report import write_outputs
from vlat.evaluation.runner import EvalInputError, EvalSpec, Evaluator
from vlat.evaluation.tables import aggregate, paired
from vlat.io import published_files, write_json_atomic

STRATEGIES = ["default", "dense", "very_dense", "limited", "fixed", "vanilla"]  # "vanilla" = vanilla fine-tuning
PER_SAMPLE = "_per_sample"  # suffix: the strategy with a virtual factor per sample instead of per batch


def parse_strategy(name: str) -> tuple[str, bool]:
    """``default`` -> (default, per batch); ``default_per_sample`` -> (default, per sample). Raises on unknowns."""
    base = name.removesuffix(PER_SAMPLE)
    if base not in STRATEGIES or (base == "vanilla" and base != name):
        known = ", ".join([*STRATEGIES, *(f"{s}{PER_SAMPLE}" for s in STRATEGIES if s != "vanilla")])
        raise ValueError(f"--strategies: {name!r} is not one of {known}")
    return base, base != name


def run_config(base: dict, strategy: str, seed: int, run_dir: Path) -> dict:
    """The training config of one (strategy, seed) run, derived from a base config (``strategy`` may carry the
    per-sample suffix)."""
    strategy, per_sample = parse_strategy(strategy)
    cfg = json.loads(json.dumps(base))  # deep copy
    trainer = cfg.setdefault("trainer", {})
    trainer["default_root_dir"] = str(run_dir)
    callbacks = [c for c in trainer.get("callbacks", []) if not c["class_path"].endswith("VirtualLongformCallback")]
    for c in callbacks:
        if c["class_path"].endswith("AdapterCheckpoint"):
            c.setdefault("init_args", {})["dirpath"] = str(run_dir / "checkpoints")
    if strategy != "vanilla":
        callbacks.insert(
            0,
            {
                "class_path": "vlat.training.vlat_callback.VirtualLongformCallback",
                "init_args": {"strategy": strategy, "seed": seed, **({"per_sample": True} if per_sample else {})},
            },
        )
    trainer["callbacks"] = callbacks
    if isinstance(trainer.get("logger"), dict):
        trainer["logger"].setdefault("init_args", {})["save_dir"] = str(run_dir)
    cfg["seed_everything"] = seed
    cfg.setdefault("data", {})["seed"] = seed
    model = cfg.setdefault("model", {})
    if strategy == "vanilla":
        model["rope_method"] = "vanilla"
    elif model.get("rope_method", "partial_pi") == "vanilla":
        model["rope_method"] = "partial_pi"
    return cfg


def _recorded_training(run_dir: Path, extra: list[str]) -> dict:
    """What a finished run was trained with (runs from before this was recorded: their train.yaml)."""
    recorded = json.loads((run_dir / "done.json").read_text()).get("training")
    if recorded is None and (run_dir / "train.yaml").exists():
        recorded = {"config": yaml.safe_load((run_dir / "train.yaml").read_text()), "extra": extra}
    return recorded


def train_run(base: dict, strategy: str, seed: int, run_dir: Path, extra: list[str], root: Path) -> Path:
    """Train one run unless it is done with the same training arguments; returns its adapter directory.

    A finished run whose config or extra arguments changed is trained again; the old one is kept beside it as
    ``<run>.stale-N``."""
    done = run_dir / "done.json"
    config = run_config(base, strategy, seed, run_dir)
    if done.exists() and _recorded_training(run_dir, extra) != {"config": config, "extra": extra}:
        stale = next(p for n in count(1) if not (p := run_dir.with_name(f"{run_dir.name}.stale-{n}")).exists())
        run_dir.rename(stale)
        print(f"[compare] {run_dir.name}: training arguments changed, training again (old run kept as {stale.name})")
    if not done.exists():
        run_dir.mkdir(parents=True, exist_ok=True)
        path = run_dir / "train.yaml"
        path.write_text(yaml.safe_dump(config))
        cmd = [sys.executable, str(root / "train.py"), "--config", str(path), *extra]
        res = subprocess.run(cmd, cwd=root)
        if res.returncode != 0:
            raise RuntimeError(f"training {strategy} seed {seed} failed (exit {res.returncode}): {' '.join(cmd)}")
        adapter = str(run_dir / "checkpoints" / "last-adapter")
        training = {"config": config, "extra": extra}
        write_json_atomic(done, {"strategy": strategy, "seed": seed, "adapter": adapter, "training": training})
    return Path(json.loads(done.read_text())["adapter"])


def evaluate_run(spec: EvalSpec, adapter: Path, label: str, run_dir: Path) -> list[dict]:
    """Evaluate a run's adapter, or reuse its ``eval/results.json`` when that was made with the same settings
    (data, split, methods, lengths, ...; results from before settings were recorded are reused as they are)."""
    cached = run_dir / "eval" / "results.json"
    spec = EvalSpec(**{**spec.__dict__, "adapters": [f"{label}={adapter}"]})
    wanted = json.loads(json.dumps(asdict(spec), default=str))
    if cached.exists():
        done = json.loads(cached.read_text())
        if done.get("spec") in (None, wanted):
            return done["results"]
        print(f"[compare] {run_dir.name}: evaluation settings changed, evaluating again")
    evaluator = Evaluator(spec)
    preds, rows = evaluator.run(progress=False)
    if evaluator.memory_messages:  # a partial table would pass for a whole one
        raise EvalInputError(f"evaluating {label}: {evaluator.memory_messages[0]}")
    write_outputs(run_dir / "eval", rows, preds, {"adapter": str(adapter), "spec": wanted})
    return rows


def aggregate_seeds(rows: list[dict]) -> list[dict]:
    groups: dict[tuple, list[float]] = defaultdict(list)
    for r in rows:
        groups[(r["strategy"], r["method"], r["length_min"])].append(r["accuracy"])
    return [
        {
            "strategy": s,
            "method": m,
            "length_min": x,
            "seeds": len(v),
            "mean": statistics.fmean(v),
            "std": statistics.stdev(v) if len(v) > 1 else None,  # one seed has no spread
        }
        for (s, m, x), v in groups.items()
    ]


def run_predictions(run_dir: Path) -> list[dict]:
    """The per-question predictions of a run's evaluation (``eval/predictions.jsonl``)."""
    path = run_dir / "eval" / "predictions.jsonl"
    return [json.loads(x) for x in path.read_text().splitlines()] if path.exists() else []


def pooled_and_paired(preds: dict[tuple[str, int], list[dict]], baseline: str = "vanilla") -> tuple[list, list]:
    """Over all seeds: each (strategy, method, length)'s accuracy on the pooled questions with its 95% interval,
    and each strategy minus ``baseline`` (vanilla fine-tuning) on the same (seed, question) pairs, with its paired
    interval (:mod:`vlat.evaluation.tables`: a recording's questions over every seed form one cluster)."""
    tagged = [{**p, "adapter": s, "id": f"{seed}/{p['id']}"} for (s, seed), ps in preds.items() for p in ps]
    strategies = list(dict.fromkeys(s for s, _ in preds))
    pooled = [{"strategy": r.pop("adapter"), **r} for r in aggregate(tagged)]
    pairs = [(s, baseline) for s in strategies if s != baseline] if baseline in strategies else []
    differences = [{"strategy": r.pop("a"), "baseline": r.pop("b"), **r} for r in paired(tagged, pairs)]
    return pooled, differences


def comparison_table(agg: list[dict]) -> str:
    from vlat.evaluation.report import markdown_table

    rows = [{"adapter": a["strategy"], "method": a["method"], "length_min": a["length_min"], **a} for a in agg]
    return markdown_table(
        rows, value=lambda r: f"{100 * r['mean']:.2f}" + (f" ± {100 * r['std']:.2f}" if r["std"] is not None else "")
    )


def plot_accuracy_vs_length(agg: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    methods = list(dict.fromkeys(a["method"] for a in agg))
    fig, axes = plt.subplots(1, len(methods), figsize=(5 * len(methods), 3.8), sharey=True, squeeze=False)
    for ax, method in zip(axes[0], methods, strict=True):
        for strategy in dict.fromkeys(a["strategy"] for a in agg):
            pts = sorted(
                (a["length_min"], a["mean"], a["std"])
                for a in agg
                if a["method"] == method and a["strategy"] == strategy
            )
            xs, ys, es = zip(*pts, strict=True)
            yerr = None if None in es else [100 * e for e in es]  # one seed: no error bar
            ax.errorbar(xs, [100 * y for y in ys], yerr=yerr, marker="o", capsize=3, label=strategy)
        ax.set_title(f"{method} inference")
        ax.set_xlabel("audio length (min)")
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("accuracy (%), mean ± std over seeds")
    axes[0][-1].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def write_comparison(
    out_dir: Path, agg: list[dict], per_run: list[dict], pooled: list[dict] = (), paired: list[dict] = ()
) -> None:
    from vlat.evaluation.report import markdown_table, paired_table, with_interval

    doc = {"aggregate": agg, "pooled": list(pooled), "paired_vs_vanilla": list(paired), "runs": per_run}
    text = "Accuracy (%), mean ± std over seeds\n\n" + comparison_table(agg)
    if pooled:
        rows = [{"adapter": r["strategy"], **r} for r in pooled]
        text += "\nAccuracy (%) of the questions pooled over seeds [95% interval]\n\n" + markdown_table(
            rows, with_interval
        )
    if paired:
        rows = [{**r, "a": r["strategy"], "b": r["baseline"], "method": r["method"]} for r in paired]
        text += "\nEach strategy minus vanilla fine-tuning, on the same questions and seeds\n\n" + paired_table(rows)
    with published_files(out_dir) as tmp:
        (tmp / "comparison.json").write_text(json.dumps(doc, indent=2) + "\n")
        lines = ["strategy,method,length_min,seeds,mean,std"] + [
            f"{a['strategy']},{a['method']},{a['length_min']:g},{a['seeds']},{a['mean']:.6f},"
            + (f"{a['std']:.6f}" if a["std"] is not None else "")
            for a in agg
        ]
        (tmp / "comparison.csv").write_text("\n".join(lines) + "\n")
        (tmp / "comparison.md").write_text(text)
        plot_accuracy_vs_length(agg, tmp / "accuracy_vs_length.png")
