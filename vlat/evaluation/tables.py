"""From per-question predictions to the numbers a table shows: each cell's accuracy with its 95% interval, what it
holds (questions, recordings, the durations actually included), and paired differences between two settings scored
on the same questions (:mod:`vlat.evaluation.stats` for the intervals)."""

from __future__ import annotations

from collections import defaultdict

from vlat.evaluation.stats import accuracy_interval, distinguishable, paired_difference

DIMENSIONS = ("adapter", "compression", "method")  # what a paired comparison may vary; the rest is held equal


def _per_recording(preds: list[dict], value) -> tuple[list[float], list[int]]:
    sums: dict[str, float] = defaultdict(float)
    sizes: dict[str, int] = defaultdict(int)
    for p in preds:
        sums[p["recording"]] += value(p)
        sizes[p["recording"]] += 1
    return list(sums.values()), list(sizes.values())


def aggregate(preds: list[dict], by_category: bool = False) -> list[dict]:
    """One row per (adapter, compression, method, length) — and question category with ``by_category`` (questions
    without one are left out of those rows): accuracy and its 95% interval (recordings as the independent unit),
    questions, recordings, the shortest / mean / longest recording included (seconds), unparsable replies and mean
    audio tokens."""
    groups: dict[tuple, list[dict]] = defaultdict(list)
    for p in preds:
        if by_category and p.get("category") is None:
            continue
        groups[
            (p["adapter"], p["compression"], p["method"], p["length"], p.get("category") if by_category else None)
        ].append(p)
    rows = []
    for (adapter, compression, method, length, category), ps in groups.items():
        correct, sizes = _per_recording(ps, lambda p: int(p["correct"]))
        iv = accuracy_interval(correct, sizes)
        durations = {p["recording"]: p["duration_s"] for p in ps}.values()
        rows.append(
            {
                "adapter": adapter,
                "compression": compression,
                "method": method,
                "length_min": length,
                "questions": len(ps),
                "recordings": iv.recordings,
                "accuracy": iv.estimate,
                "ci95_low": iv.low,
                "ci95_high": iv.high,
                "duration_s_min": min(durations),
                "duration_s_mean": sum(durations) / len(durations),
                "duration_s_max": max(durations),
                "unparsable": sum(p["unparsable"] for p in ps),
                "audio_tokens_mean": sum(p["audio_tokens"] for p in ps) / len(ps),
                **({"category": category} if by_category else {}),
            }
        )
    return rows


def pair_dimension(a: str, b: str, values: dict[str, list[str]]) -> str | None:
    """Which dimension ``a:b`` compares (both are values of it), or None."""
    return next((d for d in DIMENSIONS if a in values[d] and b in values[d]), None)


def paired(preds: list[dict], pairs: list[tuple[str, str]]) -> list[dict]:
    """For each pair (A, B) of one dimension's values and each setting of the others and length: A's accuracy
    minus B's on the questions both answered, its 95% interval, and whether it is distinguishable from zero."""
    values = {d: list(dict.fromkeys(p[d] for p in preds)) for d in DIMENSIONS}
    index = {(p["adapter"], p["compression"], p["method"], p["length"], p["id"]): p for p in preds}
    rows = []
    for a, b in pairs:
        dim = pair_dimension(a, b, values)
        if dim is None:
            continue
        cells: dict[tuple, list[tuple[dict, dict]]] = defaultdict(list)
        for key, pa in index.items():
            if pa[dim] != a:
                continue
            other = dict(zip(("adapter", "compression", "method", "length", "id"), key, strict=True))
            other[dim] = b
            pb = index.get(tuple(other.values()))
            if pb is not None:
                held = tuple((d, pa[d]) for d in DIMENSIONS if d != dim) + (("length_min", pa["length"]),)
                cells[held].append((pa, pb))
        for held, matched in cells.items():
            diff, sizes = _per_recording(
                [{**pa, "d": int(pa["correct"]) - int(pb["correct"])} for pa, pb in matched], lambda p: p["d"]
            )
            iv = paired_difference(diff, sizes)
            rows.append(
                {
                    "a": a,
                    "b": b,
                    "dimension": dim,
                    **dict(held),
                    "questions": iv.questions,
                    "recordings": iv.recordings,
                    "difference": iv.estimate,
                    "ci95_low": iv.low,
                    "ci95_high": iv.high,
                    "distinguishable": distinguishable(iv),
                }
            )
    return rows
