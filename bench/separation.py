"""Which rows of a leaderboard separate on the headline metric: a pairwise table of mean differences.

The leaderboard's † compares each method with the student init. Papers also need the method-vs-method answer: a
pair separates when the difference of its means exceeds twice the larger of the two seed spreads (the same rule
as †). A single-seed row (the student init: one fixed model) contributes no spread, so a pair with it uses the
other row's spread, as † does; a pair of two single-seed rows is never marked.
"""

from __future__ import annotations

from dataclasses import dataclass

from bench.leaderboard import Leaderboard, Row


@dataclass(frozen=True)
class Pair:
    a: str
    b: str
    diff: float  # mean(a) - mean(b)
    spread: float | None  # the larger seed std of the two rows (None if neither has one)

    @property
    def separates(self) -> bool:
        return self.spread is not None and abs(self.diff) > 2 * self.spread


def _student_rows(lb: Leaderboard, key: str | None) -> list[Row]:
    if key is None:
        raise ValueError("the leaderboard has no headline metric; name one")
    return [r for r in lb.rows if r.role != "teacher" and key in r.cells and r.cells[key].mean is not None]


def pairs(lb: Leaderboard, metric: str | None = None) -> list[Pair]:
    """Every pair of student rows (init and methods) on ``metric`` (default: the leaderboard's headline)."""
    key = metric or lb.headline
    rows = _student_rows(lb, key)
    out = []
    for i, a in enumerate(rows):
        for b in rows[i + 1 :]:
            sa, sb = a.cells[key], b.cells[key]
            stds = [s.std for s in (sa, sb) if s.std is not None]
            spread = max(stds) if stds else None
            out.append(Pair(a.label, b.label, sa.mean - sb.mean, spread))
    return out


def render_md(lb: Leaderboard, metric: str | None = None) -> str:
    """A lower-triangular markdown matrix: cell (row, column) = mean(row) - mean(column), † where it separates."""
    key = metric or lb.headline
    found = {(p.a, p.b): p for p in pairs(lb, key)}
    labels = [r.label for r in _student_rows(lb, key)]
    column = next(c for c in lb.columns if c.key == key)
    lines = [
        f"**Pairwise separation** on {column.label} ({'higher' if column.higher_is_better else 'lower'} is better), "
        f"suite `{lb.suite}` (hash `{lb.suite_hash}`)",
        "",
        "| | " + " | ".join(labels[:-1]) + " |",
        "|---|" + "---:|" * (len(labels) - 1),
    ]
    for i, label in enumerate(labels[1:], start=1):
        cells = []
        for j in range(len(labels) - 1):
            if j >= i:
                cells.append("")
                continue
            p = found[(labels[j], label)]
            cells.append(f"{-p.diff:+.3f}{'†' if p.separates else ''}")
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    lines += [
        "",
        "- Cell: mean of the row minus mean of the column. † marks |difference| > 2 × the larger seed std of the "
        "two rows (a single-seed row, such as the student init, contributes no spread; no mark if neither has one).",
    ]
    return "\n".join(lines) + "\n"
