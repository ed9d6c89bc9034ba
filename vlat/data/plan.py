"""The one place that decides who reads which questions: pure functions of unit row counts, hand-checkable.

A data pass (an epoch, or one repeat of an infinite stream) lays every unit's rows end to end. For training, the
order of units is permuted per pass, and so are the rows inside units that allow it (JSON tables). The sequence is
then cut into ``slots = world_size x num_workers`` contiguous ranges whose sizes differ by at most one row. Slot
``rank * num_workers + worker`` reads exactly its range, so every question is delivered exactly once per pass, whatever
the number of files, row groups, workers or ranks. A range can start or end inside a unit; such a unit is read by
two slots, each keeping its own rows, so decoding is spread over every worker even when the source is one file.

Inside a slot, rows are cut into *windows* (never crossing a unit, at most ``bucket_buffer`` rows and at most
``buffer_bytes`` of rows by the footer's size). A window of ``n`` rows gives exactly ``ceil(n / batch_size)``
batches: rows are sorted by duration there (low padding) and bad rows only make batches smaller. The batch count of
every slot is therefore known from row counts alone, and every slot pads itself with empty batches up to the largest
count. Every worker of every rank then yields the same number of batches, the DataLoader's round-robin order is
exact (resume = skip the first ``k`` batches), and DDP ranks never run out unevenly.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass

from vlat.data.sources import Unit


@dataclass(frozen=True)
class Segment:
    """Rows ``[lo, hi)`` (in the unit's pass order) of ``units[unit]``."""

    unit: int
    lo: int
    hi: int


def pass_rng(seed: int, pass_idx: int, salt: str = "") -> random.Random:
    return random.Random(f"{seed}:{pass_idx}:{salt}")


def unit_order(n_units: int, seed: int, pass_idx: int, shuffle: bool) -> list[int]:
    order = list(range(n_units))
    if shuffle:
        pass_rng(seed, pass_idx, "units").shuffle(order)
    return order


def row_order(unit: Unit, seed: int, pass_idx: int, shuffle: bool, unit_idx: int) -> list[int] | None:
    """The pass order of a random-access unit's rows (None = file order)."""
    if not (shuffle and unit.random_access):
        return None
    order = list(range(unit.num_rows))
    pass_rng(seed, pass_idx, f"rows{unit_idx}").shuffle(order)
    return order


def slot_ranges(total_rows: int, n_slots: int) -> list[tuple[int, int]]:
    """``n_slots`` contiguous ranges covering ``[0, total_rows)``; the first ``total % n`` get one row more."""
    base, extra = divmod(total_rows, n_slots)
    out, start = [], 0
    for s in range(n_slots):
        end = start + base + (1 if s < extra else 0)
        out.append((start, end))
        start = end
    return out


def segments(sizes: list[int], order: list[int], lo: int, hi: int) -> list[Segment]:
    """The pieces of units (taken in ``order``) that global rows ``[lo, hi)`` cover."""
    out, start = [], 0
    for u in order:
        end = start + sizes[u]
        a, b = max(lo, start), min(hi, end)
        if a < b:
            out.append(Segment(u, a - start, b - start))
        start = end
    return out


def window_rows(unit: Unit, bucket_buffer: int, buffer_bytes: int, batch_size: int) -> int:
    """Rows per window in ``unit``: ``bucket_buffer``, fewer when its rows are large (inline audio), never fewer than
    one batch."""
    by_bytes = int(buffer_bytes // unit.bytes_per_row) if unit.bytes_per_row > 0 else bucket_buffer
    return max(batch_size, min(bucket_buffer, by_bytes))


def windows(seg: Segment, per_window: int) -> list[tuple[int, int]]:
    return [(a, min(a + per_window, seg.hi)) for a in range(seg.lo, seg.hi, per_window)]


@dataclass(frozen=True)
class PassPlan:
    """What one slot reads in one pass: its windows (unit, row range), batches per window, and the padded total."""

    windows: list[tuple[int, int, int]]  # (unit index, lo, hi) in the unit's pass order
    batches: list[int]  # batches per window
    total: int  # batches this slot yields in the pass (its own + empty padding), equal for every slot


def plan_pass(
    units: tuple[Unit, ...],
    *,
    slot: int,
    n_slots: int,
    batch_size: int,
    bucket_buffer: int,
    buffer_bytes: int,
    seed: int,
    pass_idx: int,
    shuffle: bool,
) -> PassPlan:
    sizes = [u.num_rows for u in units]
    order = unit_order(len(units), seed, pass_idx, shuffle)
    per_window = [window_rows(u, bucket_buffer, buffer_bytes, batch_size) for u in units]

    def slot_windows(lo: int, hi: int) -> list[tuple[int, int, int]]:
        return [(s.unit, a, b) for s in segments(sizes, order, lo, hi) for a, b in windows(s, per_window[s.unit])]

    ranges = slot_ranges(sum(sizes), n_slots)
    counts = [sum(math.ceil((b - a) / batch_size) for _, a, b in slot_windows(*r)) for r in ranges]
    mine = slot_windows(*ranges[slot])
    return PassPlan(mine, [math.ceil((b - a) / batch_size) for _, a, b in mine], max(counts, default=0))


def batches_before(consumed: int, worker: int, num_workers: int) -> int:
    """Of the first ``consumed`` batches a rank's DataLoader delivered (round-robin over equal-length workers), how
    many came from ``worker``."""
    return max(0, (consumed - worker + num_workers - 1) // num_workers)
