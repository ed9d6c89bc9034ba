"""Evaluation outputs: results.json, results.csv, results.md (paper layout), predictions.jsonl — all or nothing."""

from __future__ import annotations

import csv
import io
import json
import os
from pathlib import Path

from vlat.io import published_files

FIELDS = [
    "adapter",
    "compression",
    "method",
    "length_min",
    "questions",
    "recordings",
    "accuracy",
    "ci95_low",
    "ci95_high",
    "duration_s_min",
    "duration_s_mean",
    "duration_s_max",
    "unparsable",
    "audio_tokens_mean",
]
PAIRED_FIELDS = ["a", "b", "dimension", "adapter", "compression", "method", "length_min", "questions", "recordings"]
PAIRED_FIELDS += ["difference", "ci95_low", "ci95_high", "distinguishable"]


def with_interval(r: dict) -> str:
    """``71.0 [62.1–78.6]``: accuracy (%) and its 95% interval."""
    if r.get("ci95_low") is None:
        return f"{100 * r['accuracy']:.1f}"
    return f"{100 * r['accuracy']:.1f} [{100 * r['ci95_low']:.1f}–{100 * r['ci95_high']:.1f}]"


def holds(r: dict) -> str:
    """``100 q / 20 rec, 58–61 s``: what a cell holds."""
    return f"{r['questions']} q / {r['recordings']} rec, {r['duration_s_min']:.0f}–{r['duration_s_max']:.0f} s"


def paired_table(rows: list[dict]) -> str:
    """One line per paired comparison: the difference in points, its 95% interval, and the verdict."""
    lines = [
        "| A − B | held equal | length | questions (recordings) | difference (points) | 95% interval | verdict |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in rows:
        held = ", ".join(f"{d} {r[d]}" for d in ("adapter", "compression", "method") if d in r)
        if r["ci95_low"] is None:
            interval, verdict = "–", "not computable (fewer than 2 recordings)"
        else:
            interval = f"{100 * r['ci95_low']:+.1f} to {100 * r['ci95_high']:+.1f}"
            verdict = "distinguishable from 0" if r["distinguishable"] else "not distinguishable from 0"
        lines.append(
            f"| {r['a']} − {r['b']} | {held} | {r['length_min']:g} min | {r['questions']} ({r['recordings']}) | "
            f"{100 * r['difference']:+.1f} | {interval} | {verdict} |"
        )
    return "\n".join(lines) + "\n"


def category_table(rows: list[dict]) -> str:
    """Accuracy per question category, one line per cell and category."""
    lines = ["| model | compression | method | length | category | accuracy (%) [95%] | questions (recordings) |"]
    lines.append("| --- | --- | --- | --- | --- | --- | --- |")
    for r in sorted(rows, key=lambda r: (r["adapter"], r["compression"], r["method"], r["length_min"], r["category"])):
        lines.append(
            f"| {r['adapter']} | {r['compression']} | {r['method']} | {r['length_min']:g} min | {r['category']} | "
            f"{with_interval(r)} | {r['questions']} ({r['recordings']}) |"
        )
    return "\n".join(lines) + "\n"


def results_markdown(rows: list[dict], paired_rows: list[dict], category_rows: list[dict] = ()) -> str:
    text = (
        "Accuracy (%) [95% interval; recordings are the independent unit, see vlat/evaluation/stats.py]\n\n"
        + markdown_table(rows, with_interval)
        + "\nWhat each cell holds (questions / recordings, shortest–longest recording)\n\n"
        + markdown_table(rows, holds)
    )
    if paired_rows:
        text += "\nPaired differences (the same questions under both settings)\n\n" + paired_table(paired_rows)
    if category_rows:
        text += "\nAccuracy per question category\n\n" + category_table(list(category_rows))
    return text


def markdown_table(rows: list[dict], value=lambda r: f"{100 * r['accuracy']:.2f}") -> str:
    """Rows = adapters (training method/strategy), columns = lengths, one column group per inference method (per
    compression setting and method when audio was compressed)."""
    comp = lambda r: r.get("compression", "none")  # noqa: E731
    groups = list(dict.fromkeys((comp(r), r["method"]) for r in rows))
    named = any(c != "none" for c, _ in groups)
    lengths = sorted({r["length_min"] for r in rows})
    adapters = list(dict.fromkeys(r["adapter"] for r in rows))
    cell = {(r["adapter"], comp(r), r["method"], r["length_min"]): r for r in rows}
    label = lambda c, m: f"{c} · {m}" if named else m  # noqa: E731
    head = ["model"] + [f"{label(c, m)} · {length:g} min" for c, m in groups for length in lengths]
    lines = ["| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]
    for a in adapters:
        keys = [(a, c, m, length) for c, m in groups for length in lengths]
        vals = [value(cell[k]) if k in cell else "–" for k in keys]
        lines.append("| " + " | ".join([a, *vals]) + " |")
    return "\n".join(lines) + "\n"


def _csv(rows: list[dict], fields: list[str]) -> str:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=fields, extrasaction="ignore")
    writer.writeheader()
    writer.writerows(rows)
    return buf.getvalue()


def write_outputs(
    out_dir: str | os.PathLike,
    rows: list[dict],
    preds: list[dict],
    meta: dict,
    paired_rows: list[dict] = (),
    category_rows: list[dict] = (),
) -> Path:
    """Write every file to a staging directory first, then move them into ``out_dir`` together."""
    paired_rows, category_rows = list(paired_rows), list(category_rows)
    tables = {"results": rows, "paired": paired_rows, "by_category": category_rows}
    with published_files(out_dir) as tmp:
        (tmp / "results.json").write_text(json.dumps({**meta, **tables}, indent=2) + "\n")
        (tmp / "results.csv").write_text(_csv(rows, FIELDS))
        if paired_rows:
            (tmp / "paired.csv").write_text(_csv(paired_rows, PAIRED_FIELDS))
        (tmp / "results.md").write_text(results_markdown(rows, paired_rows, category_rows))
        (tmp / "predictions.jsonl").write_text("".join(json.dumps(p) + "\n" for p in preds))
    return Path(out_dir)
