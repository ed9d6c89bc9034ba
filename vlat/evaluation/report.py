"""Evaluation outputs: results.json, results.csv, results.md (paper layout), predictions.jsonl — all or nothing."""

from __future__ import annotations

import csv
import io
import json
import os
from pathlib import Path

from vlat.io import published_files

FIELDS = ["adapter", "compression", "method", "length_min", "questions", "accuracy", "unparsable", "audio_tokens_mean"]


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


def write_outputs(out_dir: str | os.PathLike, rows: list[dict], preds: list[dict], meta: dict) -> Path:
    """Write every file to a staging directory first, then move them into ``out_dir`` together."""
    with published_files(out_dir) as tmp:
        (tmp / "results.json").write_text(json.dumps({**meta, "results": rows}, indent=2) + "\n")
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=FIELDS)
        writer.writeheader()
        writer.writerows(rows)
        (tmp / "results.csv").write_text(buf.getvalue())
        (tmp / "results.md").write_text("Accuracy (%)\n\n" + markdown_table(rows))
        (tmp / "predictions.jsonl").write_text("".join(json.dumps(p) + "\n" for p in preds))
    return Path(out_dir)
