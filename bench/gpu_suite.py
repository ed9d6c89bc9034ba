"""Every GPU figure the project claims, in one command that fits a short GPU loan (target: 8 minutes on one
H100/H200, machine start and transfers aside).

    bash scripts/gpu-wheels.sh          # on a machine with a package registry: the wheels the GPU image lacks
    python3 bench/gpu_suite.py          # on the GPU machine, from the repository root (installs .gpu-wheels/ first)
    python bench/gpu_suite.py --tiny    # every step on CPU at tiny scale (the test suite runs this)

Each step is one of the benchmark scripts in its own process, with its own time budget inside the suite's
``--deadline``: a step that fails, runs out of memory or out of time is recorded as such and the next one runs.
Steps, most important first (the full 7B architecture, random bf16 weights):

1. ``eval``: evaluation with the shared prefix at 10, 30 and 60 minutes (questions/s, peak memory) and the no-reuse
   baseline at 10 minutes (``bench/eval_throughput.py``; weights built on the GPU).
2. ``rope``: RoPE overhead, partial_yarn and whole_yarn ÷ vanilla at 10 minutes (``bench/rope_overhead.py``).
3. ``compression``: none, pool:2, ltbm:0.5 at 10 minutes (``bench/compression.py``).
4. ``model``: the random full-size checkpoint ``train.py`` loads (``python -m vlat.testing full-model``), timed:
   the only step that writes weights to disk (about 16 GB).
5. ``train_default``: ``configs/vlat_default.yaml`` through ``train.py`` (2 minutes, batch 8, qkvo LoRA,
   bf16-mixed), fast path against plain: seconds per step, MFU, peak memory (``bench/train_loop.py``).
6. ``train_10min``, ``train_30min``: batch 1 of 10- and 30-minute audio through ``train.py`` under the ``auto``
   checkpointing policy: time and peak memory.
7. ``rope_af3``, ``eval_af3``, ``rope_voxtral``, ``eval_voxtral``: the RoPE overhead and shared-prefix evaluation
   of the other model families at their published widths (about 4 minutes; past the default deadline after the
   steps above, so run them alone with ``--steps rope_af3,eval_af3,rope_voxtral,eval_voxtral``).

Writes ``bench/results/gpu-suite-<date>.json`` and ``.md`` (every step's own results file, its status, wall time and
the end of its output) and checks the targets: the default configuration ≥ 50% MFU, 60-minute evaluation within
80 GB, prefix reuse ≥ 3.5× at 10 minutes.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
WHEELS = ROOT / ".gpu-wheels"


@dataclass
class Step:
    name: str
    what: str
    argv: list[str]  # after the interpreter; {model} = the full-size checkpoint directory
    tiny: list[str]  # the same step on CPU at tiny scale
    budget_s: float  # at most this long on the GPU (the suite's deadline may cut it shorter)
    needs_model: bool = False
    headline: list[str] = field(default_factory=list)  # keys of the step's results shown in the summary


STEPS = [
    Step(
        "eval",
        "evaluation, shared prefix at 10/30/60 min; no-reuse baseline at 10 min",
        ["bench/eval_throughput.py", "--minutes", "10,30,60", "--baseline-minutes", "10", "--rounds", "1"],
        ["bench/eval_throughput.py", "--tiny"],
        150,
        headline=["questions_per_s/", "speedup_vs_no_reuse/"],
    ),
    Step(
        "rope",
        "RoPE overhead at 10 min (15,000 audio tokens): partial_yarn, whole_yarn / vanilla",
        ["bench/rope_overhead.py", "--rounds", "3"],
        ["bench/rope_overhead.py", "--tiny"],
        60,
        headline=["rope_overhead_partial_yarn", "rope_overhead_whole_yarn"],
    ),
    Step(
        "compression",
        "compression none, pool:2, ltbm:0.5 at 10 min: tokens, questions/s, training step",
        ["bench/compression.py", "--minutes", "10", "--settings", "none,pool:2,ltbm:0.5", "--rounds", "1"],
        ["bench/compression.py", "--tiny", "--settings", "none,pool:2,ltbm:0.5"],
        90,
        headline=["audio_tokens/", "questions_per_s/", "train_step_s/"],
    ),
    Step(
        "model",
        "random full-size checkpoint for the train.py path (written to disk, timed)",
        ["-m", "vlat.testing", "full-model", "{model}"],
        ["-m", "vlat.testing", "tiny-model", "{model}"],
        150,
    ),
    Step(
        "train_default",
        "vlat_default.yaml through train.py: 2 min x batch 8, qkvo, bf16; fast vs plain",
        ["bench/train_loop.py", "--model", "{model}", "--steps", "3", "--warmup", "1", "--recordings", "12"],
        ["bench/train_loop.py", "--tiny", "--model", "{model}"],
        180,
        needs_model=True,
        headline=["step_s/fast", "step_s/plain", "mfu/fast", "mfu/plain", "speedup_fast_vs_plain"],
    ),
    Step(
        "train_10min",
        "10-min audio, batch 1, through train.py (auto checkpointing)",
        ["bench/train_loop.py", "--model", "{model}", "--minutes", "10", "--variants", "fast", "--steps", "2"]
        + ["--warmup", "1", "--recordings", "2", "--", "--data.batch_size", "1"],
        ["bench/train_loop.py", "--tiny", "--model", "{model}", "--variants", "fast"],
        90,
        needs_model=True,
        headline=["step_s/fast", "mfu/fast"],
    ),
    Step(
        "train_30min",
        "30-min audio, batch 1, through train.py (auto checkpointing)",
        ["bench/train_loop.py", "--model", "{model}", "--minutes", "30", "--variants", "fast", "--steps", "2"]
        + ["--warmup", "1", "--recordings", "2", "--", "--data.batch_size", "1", "--data.max_audio_seconds", "3600"],
        ["bench/train_loop.py", "--tiny", "--model", "{model}", "--variants", "fast"],
        120,
        needs_model=True,
        headline=["step_s/fast", "mfu/fast"],
    ),
]


def family_steps(family: str, short: str, label: str) -> list[Step]:
    """RoPE overhead and shared-prefix evaluation of another model family at its published widths."""
    return [
        Step(
            f"rope_{short}",
            f"{label}: RoPE overhead, 15,000 audio tokens: partial_yarn, whole_yarn / vanilla",
            ["bench/rope_overhead.py", "--family", family, "--rounds", "3"],
            ["bench/rope_overhead.py", "--tiny", "--family", family],
            60,
            headline=["rope_overhead_partial_yarn", "rope_overhead_whole_yarn"],
        ),
        Step(
            f"eval_{short}",
            f"{label}: evaluation with the shared prefix at 10 and 30 min",
            ["bench/eval_throughput.py", "--family", family, "--minutes", "10,30", "--baseline-minutes", "0"]
            + ["--rounds", "1"],
            ["bench/eval_throughput.py", "--tiny", "--family", family],
            90,
            headline=["questions_per_s/"],
        ),
    ]


STEPS += family_steps("audioflamingo3", "af3", "Audio Flamingo 3 (7B)")
STEPS += family_steps("voxtral", "voxtral", "Voxtral-Mini-3B")


def install_wheels() -> str | None:
    """Install ``.gpu-wheels/*.whl`` (``scripts/gpu-wheels.sh``) into ``.gpu-wheels/site`` once, without an index;
    the directory to put first on the path, or None when no wheels were brought."""
    wheels = sorted(WHEELS.glob("*.whl"))
    if not wheels:
        return None
    site = WHEELS / "site"
    stamp = site / ".installed"
    names = "\n".join(w.name for w in wheels)
    if not (stamp.is_file() and stamp.read_text() == names):
        cmd = [sys.executable, "-m", "pip", "install", "-q", "--no-index", "--no-deps", "--upgrade", "--target"]
        subprocess.run([*cmd, str(site), *map(str, wheels)], check=True)
        stamp.write_text(names)
    return str(site)


def run_step(step: Step, argv: list[str], out: Path, env: dict, timeout: float) -> dict:
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    record: dict = {"what": step.what, "command": " ".join(["python", *argv])}
    proc = subprocess.Popen(
        [sys.executable, *argv],
        cwd=ROOT,
        env={**env, "VLAT_BENCH_RESULTS": str(out)},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,  # its own process group: a timeout also stops the train.py runs it started
    )
    try:
        text, _ = proc.communicate(timeout=timeout)
        record["returncode"] = proc.returncode
        if proc.returncode == 0:
            record["status"] = "ok"
        elif "out of memory" in text.lower():
            record["status"] = "out of memory"
        else:
            record["status"] = "failed"
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        text, _ = proc.communicate()
        record["status"] = f"out of time ({timeout:.0f} s)"
    record["wall_s"] = round(time.perf_counter() - t0, 1)
    record["output_tail"] = text.strip().splitlines()[-12:]
    results = [json.loads(p.read_text()) for p in sorted(out.glob("*.json"))]
    record["results"] = results
    if results and record["status"] == "ok":  # a script records an out-of-memory configuration and goes on
        runs = [r for res in results for r in res.get("runs", []) if isinstance(r, dict)]
        runs += [r for res in results for r in (res.get("results") or {}).values() if isinstance(r, dict)]
        if any(r.get("oom") for r in runs):
            record["status"] = "ok (some configurations out of memory)"
    return record


def headline(step: Step, record: dict) -> dict:
    values = {}
    for res in record["results"]:
        for key, value in res.items():
            if isinstance(value, int | float) and any(key.startswith(h) for h in step.headline):
                values[key] = value
    return values


def targets(records: dict) -> list[dict]:
    """The suite's targets, each with the measured value (None: not measured) and whether it is met."""

    def first(step: str, key: str):
        for res in records.get(step, {}).get("results", []):
            if key in res:
                return res[key]
        return None

    def eval_peak(minutes: float):
        for res in records.get("eval", {}).get("results", []):
            for run in res.get("runs", []):
                if run.get("minutes") == minutes and run.get("reuse"):
                    return None if run.get("oom") else run.get("peak_memory_gib")
        return None

    rows = [
        ("default configuration, fast path: MFU", first("train_default", "mfu/fast"), ">= 0.50", lambda v: v >= 0.5),
        ("60-minute evaluation: peak memory (GiB)", eval_peak(60.0), "<= 74.5 (80 GB)", lambda v: v <= 80e9 / 2**30),
        (
            "prefix reuse at 10 minutes: speedup",
            first("eval", "speedup_vs_no_reuse/10min"),
            ">= 3.5",
            lambda v: v >= 3.5,
        ),
    ]
    return [{"target": t, "value": v, "wanted": w, "met": None if v is None else bool(ok(v))} for t, v, w, ok in rows]


def markdown(summary: dict) -> str:
    lines = [
        f"# GPU suite, {summary['date']}",
        "",
        f"Machine: {summary['machine']}; commit {summary['commit']}; command `{summary['command']}`; "
        f"total {summary['wall_s']:.0f} s.",
        "",
        "| step | what | status | wall (s) | figures |",
        "| --- | --- | --- | --- | --- |",
    ]
    for name, rec in summary["steps"].items():
        figures = ", ".join(
            f"{k} {v:.3g}" if isinstance(v, float) else f"{k} {v}" for k, v in rec.get("headline", {}).items()
        )
        lines.append(f"| {name} | {rec['what']} | {rec['status']} | {rec.get('wall_s', '')} | {figures} |")
    lines += ["", "| target | wanted | measured | met |", "| --- | --- | --- | --- |"]
    for t in summary["targets"]:
        value = "not measured" if t["value"] is None else f"{t['value']:.3g}"
        met = "n/a" if t["met"] is None else ("yes" if t["met"] else "no")
        lines.append(f"| {t['target']} | {t['wanted']} | {value} | {met} |")
    return "\n".join(lines) + "\n"


def commit() -> str:
    try:
        return subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=True
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tiny", action="store_true", help="every step on CPU at tiny scale")
    ap.add_argument("--deadline", type=float, default=480.0, help="seconds for the whole suite (default 8 minutes)")
    ap.add_argument("--steps", help="comma-separated subset of: " + ", ".join(s.name for s in STEPS))
    ap.add_argument("--model-dir", help="where the model step writes the checkpoint (default: a temporary directory)")
    args = ap.parse_args(argv)
    wanted = args.steps.split(",") if args.steps else [s.name for s in STEPS]
    unknown = sorted(set(wanted) - {s.name for s in STEPS})
    if unknown:
        ap.error(f"--steps: unknown {unknown}")

    site = install_wheels()
    sys.path[:0] = [p for p in (site, str(ROOT)) if p]  # this process too: the wheels' versions, then vlat
    paths = [p for p in (site, str(ROOT), str(ROOT / "bench"), os.environ.get("PYTHONPATH")) if p]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(paths)}
    results_dir = Path(os.environ.get("VLAT_BENCH_RESULTS", ROOT / "bench" / "results"))
    date = dt.date.today().isoformat()
    start = time.perf_counter()
    records: dict[str, dict] = {}
    with tempfile.TemporaryDirectory(prefix="vlat-gpu-suite-") as tmp:
        model_dir = args.model_dir or str(Path(tmp) / "full-model")
        for step in (s for s in STEPS if s.name in wanted):
            left = args.deadline - (time.perf_counter() - start)
            if step.needs_model and records.get("model", {}).get("status") != "ok":
                records[step.name] = {"what": step.what, "status": "not run: no model checkpoint (step model)"}
            elif left < 20:
                records[step.name] = {"what": step.what, "status": f"not run: {args.deadline:.0f}-s deadline reached"}
            else:
                argv_ = [a.replace("{model}", model_dir) for a in (step.tiny if args.tiny else step.argv)]
                timeout = left if args.tiny else min(step.budget_s, left)
                records[step.name] = run_step(step, argv_, Path(tmp) / step.name, env, timeout)
                records[step.name]["headline"] = headline(step, records[step.name])
            print(f"gpu suite: {step.name}: {records[step.name]['status']}", flush=True)
    import torch

    machine = (
        f"{torch.cuda.get_device_name()} (CUDA {torch.version.cuda}), torch {torch.__version__}"
        if torch.cuda.is_available()
        else f"CPU, {os.cpu_count()} cores, torch {torch.__version__}"
    )
    summary = {
        "benchmark": "gpu-suite",
        "date": date,
        "machine": machine,
        "commit": commit(),
        "command": " ".join(["python", "bench/gpu_suite.py", *(argv if argv is not None else sys.argv[1:])]),
        "tiny": args.tiny,
        "wall_s": round(time.perf_counter() - start, 1),
        "wheels": site,
        "steps": records,
    }
    summary["targets"] = targets(records)
    from vlat.io import write_json_atomic, write_text_atomic

    name = f"gpu-suite-{date}" + ("_tiny" if args.tiny else "")
    write_json_atomic(results_dir / f"{name}.json", summary)
    write_text_atomic(results_dir / f"{name}.md", markdown(summary))
    print(markdown(summary))
    print(f"wrote {results_dir / name}.json and .md")
    return 0 if all(r["status"].startswith("ok") for r in records.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
