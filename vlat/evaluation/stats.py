"""How sure a table is: 95% intervals that respect that a recording's questions are not independent.

The questions of one recording (five in YODAS2-MCQA) share its audio: a model that cannot hear it tends to miss all
of them. Treating them as independent draws understates the uncertainty, so both intervals here are computed from
per-recording sums (the recording is the independent unit; cluster-robust, ratio-estimator variance):

- **accuracy of a cell** — a Wilson score interval on the *effective* number of questions ``N / deff``, where the
  design effect ``deff`` = cluster-robust variance ÷ binomial variance (at least 1). Wilson keeps the interval inside
  [0, 1] and sensible at 0% and 100%; with a single recording the recording is the only observation
  (``deff`` = questions per recording).
- **paired difference** of two settings scored on the same questions — per recording, the difference of correct
  answers; the mean difference per question ± t(k−1) × its cluster-robust standard error over the k recordings.
  *Distinguishable from zero* when the interval excludes 0. Needs at least 2 recordings.

Pure functions of counts, hand-checkable (``tests/test_stats.py``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

Z95 = 1.959963984540054
# t quantiles at 0.975 for 1..30 degrees of freedom; beyond, the Cornish-Fisher expansion (error < 1e-3)
_T975 = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160, 2.145, 2.131,
         2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048, 2.045, 2.042)  # fmt: skip


def t975(df: int) -> float:
    """The 97.5% quantile of Student's t with ``df`` degrees of freedom."""
    if df < 1:
        raise ValueError(f"df {df}: at least 1")
    if df <= len(_T975):
        return _T975[df - 1]
    z = Z95
    return z + (z**3 + z) / (4 * df) + (5 * z**5 + 16 * z**3 + 3 * z) / (96 * df**2)


def wilson(p: float, n: float, z: float = Z95) -> tuple[float, float]:
    """Wilson score interval of a proportion ``p`` observed on ``n`` (possibly effective, fractional) trials."""
    denom = 1 + z * z / n
    center = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return max(0.0, center - half), min(1.0, center + half)


@dataclass(frozen=True)
class Interval:
    estimate: float
    low: float | None  # None: not computable (too few recordings)
    high: float | None
    questions: int
    recordings: int

    def as_dict(self) -> dict:
        return {"ci95": None if self.low is None else [self.low, self.high]}


def _cluster_variance(sums: Sequence[float], sizes: Sequence[int], estimate: float) -> float:
    """Cluster-robust variance of a ratio Σsums / Σsizes over k clusters: k/(k−1) Σ(s_i − est·n_i)² / N²."""
    k, total = len(sums), sum(sizes)
    return k / (k - 1) * sum((s - estimate * n) ** 2 for s, n in zip(sums, sizes, strict=True)) / total**2


def accuracy_interval(correct: Sequence[int], questions: Sequence[int]) -> Interval:
    """Accuracy of a cell and its 95% interval from per-recording counts (correct answers, questions)."""
    n, k = sum(questions), len(questions)
    if n == 0:
        raise ValueError("accuracy_interval: no question")
    p = sum(correct) / n
    if k < 2:
        deff = n  # one recording: one observation, however many questions it has
    elif 0 < p < 1:
        deff = max(1.0, _cluster_variance(correct, questions, p) / (p * (1 - p) / n))
    else:
        deff = 1.0  # every answer right (or wrong): no spread to measure; Wilson still gives a proper interval
    low, high = wilson(p, n / deff)
    return Interval(p, low, high, n, k)


def paired_difference(diff: Sequence[int], questions: Sequence[int]) -> Interval:
    """Accuracy of A minus accuracy of B on the same questions, from per-recording differences in correct answers
    (A's minus B's) and question counts; interval None with fewer than 2 recordings."""
    n, k = sum(questions), len(questions)
    if n == 0:
        raise ValueError("paired_difference: no question")
    d = sum(diff) / n
    if k < 2:
        return Interval(d, None, None, n, k)
    half = t975(k - 1) * math.sqrt(_cluster_variance(diff, questions, d))
    return Interval(d, d - half, d + half, n, k)


def distinguishable(interval: Interval) -> bool | None:
    """Whether a paired difference is distinguishable from zero (its interval excludes 0); None: not computable."""
    if interval.low is None:
        return None
    return interval.low > 0 or interval.high < 0
