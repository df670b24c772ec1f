"""The statistics of the tables: the 95% CI half-width of a mean over seeds (t distribution), a cell's
per-seed values (:class:`Stat`) and the paired difference of two cells (:func:`compare`)."""

from __future__ import annotations

import functools
import math
import statistics
from dataclasses import dataclass, field

# t_{0.975, df} for df = 1..30 (scipy.stats.t.ppf(0.975, df), 10 decimals): the fallback without scipy
_T975 = (
    12.7062047362, 4.3026527297, 3.1824463053, 2.7764451052, 2.5705818356, 2.4469118511, 2.3646242516,
    2.3060041352, 2.2621571628, 2.228138852, 2.2009851601, 2.1788128297, 2.1603686565, 2.1447866879,
    2.1314495456, 2.1199052992, 2.1098155778, 2.1009220402, 2.0930240544, 2.0859634473, 2.0796138447,
    2.0738730679, 2.0686576104, 2.0638985616, 2.0595385528, 2.0555294386, 2.0518305165, 2.0484071418,
    2.0452296421, 2.0422724563,
)  # fmt: skip


def t_table(df: int) -> float:
    """t_{0.975, df} without scipy: the exact table for df ≤ 30, the Cornish–Fisher expansion beyond (|error| < 1e-7)."""
    if df < 1:
        raise ValueError(f"degrees of freedom must be ≥ 1, got {df}")
    if df <= len(_T975):
        return _T975[df - 1]
    z = 1.959963984540054
    g = ((z**3 + z) / 4, (5 * z**5 + 16 * z**3 + 3 * z) / 96, (3 * z**7 + 19 * z**5 + 17 * z**3 - 15 * z) / 384,
         (79 * z**9 + 776 * z**7 + 1482 * z**5 - 1920 * z**3 - 945 * z) / 92160)  # fmt: skip
    return z + sum(gi / df ** (i + 1) for i, gi in enumerate(g))


@functools.cache
def t_crit(df: int) -> float:
    """The two-sided 95% Student-t critical value t_{0.975, df} (scipy when importable, else :func:`t_table`)."""
    try:
        from scipy.stats import t
    except ImportError:  # pragma: no cover - scipy is a dependency of the venv, but not of the tables
        return t_table(df)
    if df < 1:
        raise ValueError(f"degrees of freedom must be ≥ 1, got {df}")
    return float(t.ppf(0.975, df))


def ci_half(values: list[float]) -> float | None:
    """The 95% CI half-width of the mean of ``values``: t_{0.975, n-1} · s / sqrt(n); None with fewer than 2."""
    n = len(values)
    if n < 2:
        return None
    return t_crit(n - 1) * statistics.stdev(values) / math.sqrt(n)


@dataclass
class Stat:
    """One cell: the per-seed values of a metric for one row (``seeds`` parallel to ``values``)."""

    values: list[float]
    seeds: list[int | None] = field(default_factory=list)

    @property
    def n(self) -> int:
        return len(self.values)

    @property
    def mean(self) -> float | None:
        return statistics.fmean(self.values) if self.values else None

    @property
    def std(self) -> float | None:
        return statistics.stdev(self.values) if len(self.values) >= 2 else None

    @property
    def ci95(self) -> float | None:
        """Half-width of the 95% CI of the mean (None with a single value)."""
        return ci_half(self.values)

    def by_seed(self) -> dict[int | None, float]:
        return dict(zip(self.seeds, self.values, strict=True)) if len(self.seeds) == len(self.values) else {}


@dataclass(frozen=True)
class Diff:
    """``a − b`` of two cells: the mean of the per-seed differences and its 95% CI half-width.

    ``rule``: ``"paired"`` (per-seed differences on the seeds both rows have), ``"fixed"`` (one side is a single
    seedless model, such as the student init: the other side's per-seed values minus that one value) or
    ``"unpaired"`` (no common seed: the difference of the means, no CI)."""

    mean: float
    half: float | None
    n: int
    rule: str

    @property
    def low(self) -> float | None:
        return None if self.half is None else self.mean - self.half

    @property
    def high(self) -> float | None:
        return None if self.half is None else self.mean + self.half

    @property
    def significant(self) -> bool:
        """The 95% CI excludes 0 (never without a CI)."""
        return self.half is not None and abs(self.mean) > self.half


def _fixed(stat: Stat) -> bool:
    return stat.n == 1 and stat.seeds == [None]


def _diff(diffs: list[float], rule: str) -> Diff:
    return Diff(statistics.fmean(diffs), ci_half(diffs), len(diffs), rule)


def compare(a: Stat, b: Stat) -> Diff | None:
    """``a − b`` with the paired-t rule: per seed on the seeds both have (≥ 2 for a CI); against a single seedless
    model (the student init, the teacher) the other side's own per-seed values; None if either side is empty."""
    if not a.values or not b.values:
        return None
    pa, pb = a.by_seed(), b.by_seed()
    common = [s for s in pa if s is not None and s in pb]
    if common:
        return _diff([pa[s] - pb[s] for s in common], "paired")
    if _fixed(b):
        return _diff([v - b.values[0] for v in a.values], "fixed")
    if _fixed(a):
        return _diff([a.values[0] - v for v in b.values], "fixed")
    return Diff(a.mean - b.mean, None, 0, "unpaired")  # type: ignore[operator]
