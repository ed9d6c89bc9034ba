"""The miniature's numbers from its runs' per-question predictions: cells with counts and 95% intervals, paired
differences, per-kind accuracy, and the paper's claims each checked against its paired interval.

Pure functions over ``predictions.jsonl`` rows (:mod:`vlat.evaluation.tables` does the counting and intervals);
:mod:`miniature` runs the commands, :mod:`miniature_report` renders the tables.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

from vlat.evaluation.tables import aggregate, paired


def predictions(path: Path, **relabel) -> list[dict]:
    """The rows of a ``predictions.jsonl``, with fields overridden by ``relabel`` (e.g. a method's anchor)."""
    return [{**json.loads(x), **relabel} for x in path.read_text().splitlines()]


def tagged_runs(runs: dict[tuple[str, int], list[dict]]) -> list[dict]:
    """Fine-tuning runs' predictions with the strategy as the adapter and the seed in the question id, so that
    paired comparisons match (seed, question) pairs (as ``compare.py`` pools them)."""
    return [{**p, "adapter": s, "id": f"{seed}/{p['id']}"} for (s, seed), ps in runs.items() for p in ps]


def cells(preds: list[dict]) -> list[dict]:
    """One row per (adapter, method, length): accuracy, 95% interval, questions, recordings, durations."""
    return sorted(aggregate(preds), key=lambda r: (r["adapter"], r["method"], r["length_min"]))


def kinds(preds: list[dict]) -> list[dict]:
    """:func:`cells` per question kind."""
    return sorted(aggregate(preds, by_category=True), key=lambda r: (r["adapter"], r["method"], r["length_min"]))


@dataclass(frozen=True)
class Claim:
    """A statement of the paper, the comparison that tests it in the miniature, and the direction it predicts."""

    name: str
    paper: str  # the paper's words, with the model and table they are about
    a: str  # the setting the paper says is better (or, with ``expect`` 0, the one compared)
    b: str
    dimension: str  # adapter | method
    held: dict  # the other dimensions' values (e.g. {"method": "partial_pi"}) and nothing else
    length_min: float
    expect: int = 1  # +1: a better than b; 0: a and b close


def verdict(row: dict | None, expect: int) -> str:
    """``shown`` when the paired interval excludes 0 in the predicted direction (or, for ``expect`` 0, lies within
    ±5 points), ``opposite shown`` when it excludes 0 the other way, else ``not shown``."""
    if row is None or row["ci95_low"] is None:
        return "not measured"
    low, high = row["ci95_low"], row["ci95_high"]
    if expect == 0:
        return "shown" if -0.05 <= low and high <= 0.05 else "not shown"
    if low > 0:
        return "shown"
    if high < 0:
        return "opposite shown"
    return "not shown"


def check_claims(claims: list[Claim], preds: list[dict]) -> list[dict]:
    """Each claim with its paired difference (a − b), interval, counts and verdict."""
    out = []
    for c in claims:
        rows = paired(preds, [(c.a, c.b)])
        row = next(
            (r for r in rows if r["length_min"] == c.length_min and all(r.get(k) == v for k, v in c.held.items())),
            None,
        )
        out.append({**asdict(c), "result": row, "verdict": verdict(row, c.expect)})
    return out


ABSTRACT = (
    "Abstract (SALMONN and Qwen2-Audio, Table 1): \u201cPartial YaRN outperforms the original models across wide "
    "range of settings\u201d"
)
EXTENSION = (
    "§1 (SALMONN and Qwen2-Audio, Table 1): \u201cOur experiments on both training-free and fine-tuned audio context "
    "extensions reveal that extension-based methods outperform original models\u201d"
)
TABLE1_CLOSE = (
    "Table 1 caption (SALMONN and Qwen2-Audio): \u201cComparing between the two top approaches: Whole and Partial "
    "YaRN, we find their performance to be closed\u201d"
)
TABLE1_ANCHOR = (
    "Table 1 caption (SALMONN and Qwen2-Audio): \u201cstretching from the observed 2mins context proves "
    "significantly more effective\u201d"
)
TABLE2_VANILLA = (
    "§6, Table 2 (Qwen2-Audio, trained on 2 min): \u201cWhen evaluated with vanilla inference, the model trained with "
    "Virtual Longform shows a dramatic improvement on 10mins audio, increasing accuracy from 32.76% to 75.11%\u201d"
)
TABLE2_PARTIAL = (
    "§6, Table 2 (Qwen2-Audio): \u201cWhen Partial PI is applied during evaluation, the VLAT-trained model again "
    "outperforms its vanilla-trained counterpart\u201d"
)
TABLE2_COMPLEMENT = (
    "§6, Table 2 (Qwen2-Audio): \u201cVLAT's benefit is complementary to inference-time extension\u201d (75.11% "
    "\u2192 81.73% at 10 min)"
)
TABLE6_FIXED = (
    "Appendix E.1, Table 6 (Qwen2-Audio, Partial PI inference): \u201cFixed High-Factor (always 20.0x) strategy "
    "performs the worst by a large margin\u201d"
)
TABLE6_DENSE = (
    "Appendix E.1, Table 6 (Qwen2-Audio): \u201cDefault strategy which uses a coarse set of 6 sampling points "
    "outperforms both the Dense (100 points) and Very Dense (1000 points) strategies\u201d"
)
TABLE6_LIMITED = (
    "Appendix E.1, Table 6 (Qwen2-Audio): \u201cthe Limited Range strategy [...] achieves the highest performance "
    "across all evaluation lengths\u201d"
)


def table1_claims(lengths: list[float], original: float, longer: float | None) -> list[Claim]:
    """Table 1's claims at every length beyond the original window (methods labelled ``method@window``)."""
    o = f"@{original:g}"
    held = {"adapter": "base", "compression": "none"}
    out = []
    for x in (x for x in lengths if x > original):
        out += [
            Claim(f"Partial YaRN beats vanilla at {x:g} min", ABSTRACT, f"partial_yarn{o}", f"vanilla{o}", "method", held, x),
            Claim(f"Partial PI beats vanilla at {x:g} min", EXTENSION, f"partial_pi{o}", f"vanilla{o}", "method", held, x),
            Claim(
                f"Whole YaRN and Partial YaRN are close at {x:g} min", TABLE1_CLOSE, f"whole_yarn{o}",
                f"partial_yarn{o}", "method", held, x, expect=0,
            ),
        ]  # fmt: skip
        if longer is not None and x > longer:
            out.append(
                Claim(
                    f"Partial PI from a {longer:g}-min window beats it from 30 s at {x:g} min", TABLE1_ANCHOR,
                    f"partial_pi@{longer:g}", f"partial_pi{o}", "method", held, x,
                )
            )  # fmt: skip
    return out


def table2_claims(lengths: list[float], strategies: list[str], train_minutes: float) -> list[Claim]:
    """Tables 2 and 6's claims at the lengths beyond the training clips (strategies as adapters)."""
    out = []
    for x in (x for x in lengths if x > train_minutes):
        for method, quote in (("vanilla", TABLE2_VANILLA), ("partial_pi", TABLE2_PARTIAL)):
            out.append(
                Claim(
                    f"VLAT (default) beats vanilla fine-tuning at {x:g} min, {method} inference", quote, "default",
                    "vanilla", "adapter", {"method": method, "compression": "none"}, x,
                )
            )  # fmt: skip
        out.append(
            Claim(
                f"Partial PI inference adds to VLAT (default) at {x:g} min", TABLE2_COMPLEMENT, "partial_pi", "vanilla",
                "method", {"adapter": "default", "compression": "none"}, x,
            )
        )  # fmt: skip
    longest = max(lengths)
    pp = {"method": "partial_pi", "compression": "none"}
    for other, quote in (("fixed", TABLE6_FIXED), ("dense", TABLE6_DENSE), ("very_dense", TABLE6_DENSE)):
        if other in strategies:
            out.append(
                Claim(f"default beats {other} at {longest:g} min", quote, "default", other, "adapter", pp, longest)
            )
    if "limited" in strategies:
        out.append(
            Claim(
                f"limited beats default at {longest:g} min",
                TABLE6_LIMITED,
                "limited",
                "default",
                "adapter",
                pp,
                longest,
            )
        )
    return out
