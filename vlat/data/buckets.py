"""Which recordings are in length bucket L: the one owner, for training (``train_lengths``, ``val_lengths``),
``evaluate.py``, ``sweep.py``, ``compare.py`` and the miniature alike.

- With clip-length folders (the published YODAS2-MCQA layout), the folder decides.
- Without folders, a recording is in bucket L (minutes) only when its real duration is within ``tolerance`` × L of
  L (default 10%: the 2-minute bucket holds recordings of 108-132 s). Never the nearest of some grid: a 3-minute
  recording is in no bucket of {2, 5}, and a 30-s one in no bucket of {1}.
- Lengths not given: the source's folders, else :data:`STANDARD_LENGTHS`.

A recording in no requested bucket is left out; callers count it (by duration) and say so.
"""

from __future__ import annotations

from collections.abc import Sequence

STANDARD_LENGTHS = (0.5, 1.0, 2.0, 5.0, 10.0, 15.0, 20.0, 30.0, 45.0, 60.0)  # minutes, without folders
DEFAULT_TOLERANCE = 0.1  # relative: |duration - L| <= 10% of L


def requested(lengths: Sequence[float] | None, folder_lengths: Sequence[float]) -> list[float]:
    """The buckets a run reports on: the lengths asked for, else the source's folders, else the standard ones."""
    return sorted(lengths if lengths is not None else folder_lengths or STANDARD_LENGTHS)


def bucket_of(
    duration_s: float, folder_minutes: float | None, lengths: Sequence[float], tolerance: float = DEFAULT_TOLERANCE
) -> float | None:
    """The bucket (minutes) of ``lengths`` a recording is in, or None: its folder's length when it came from a
    clip-length folder, else the length its duration is within ``tolerance`` of (the closest, if several)."""
    if folder_minutes is not None:
        return folder_minutes if folder_minutes in lengths else None
    fits = [x for x in lengths if abs(duration_s - 60.0 * x) <= tolerance * 60.0 * x + 1e-6]  # 1 µs: rounding
    return min(fits, key=lambda x: abs(duration_s - 60.0 * x)) if fits else None
