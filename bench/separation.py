"""Method-vs-method comparisons, paired on seeds.

Two tables, both from a built :class:`~bench.leaderboard.Leaderboard`:

- ``separation.md`` (:func:`render_md`): every pair of student rows on the headline metric. Where the two rows
  share ≥ 2 seeds, the cell is the mean of the per-seed differences on those seeds and † marks a 95% CI
  (t over the per-seed differences) that excludes 0. Against a single seedless model (the student init: one fixed
  model) the other row's per-seed values minus that one value give the CI (the same rule with a constant). Pairs
  with fewer than 2 shared seeds fall back to the difference of the means and the old heuristic, ‡ where it exceeds
  twice the larger of the two seed stds (no CI; no mark if neither row has a std).
- ``paired.{md,csv,json}`` (:func:`build_paired`, :func:`render_paired`): every method against SFT and against KD
  on the seeds both have: the mean paired difference of Avg., of each primary task metric and of KL(T‖S), its 95%
  CI and † where the CI excludes 0.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from bench.leaderboard import AVERAGE, HEADLINE, Column, Diff, Leaderboard, Row, compare, in_average
from bench.render import _csv_num, _csv_text, _md_escape, _md_table

PAIRED_REFERENCES = ("sft", "kd")
PAIRED_FORMATS = ("md", "csv", "json")


@dataclass(frozen=True)
class Pair:
    a: str
    b: str
    diff: float  # a - b: the mean per-seed difference (rule "paired"/"fixed"), else mean(a) - mean(b)
    spread: float | None  # the larger seed std of the two rows (None if neither has one)
    half: float | None = None  # the 95% CI half-width of ``diff`` (rules "paired" and "fixed")
    n: int = 0  # per-seed differences behind ``diff`` (0 for the fallback)
    rule: str = "spread"  # "paired", "fixed" or "spread" (fewer than 2 shared seeds: the old heuristic)

    @property
    def separates(self) -> bool:
        if self.rule == "spread":
            return self.spread is not None and abs(self.diff) > 2 * self.spread
        return self.half is not None and abs(self.diff) > self.half

    @property
    def mark(self) -> str:
        return ("‡" if self.rule == "spread" else "†") if self.separates else ""


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
            d = compare(sa, sb)
            if d is not None and d.half is not None:
                out.append(Pair(a.label, b.label, d.mean, spread, d.half, d.n, d.rule))
            else:
                out.append(Pair(a.label, b.label, sa.mean - sb.mean, spread))  # type: ignore[operator]
    return out


def render_md(lb: Leaderboard, metric: str | None = None) -> str:
    """A lower-triangular markdown matrix: cell (row, column) = row minus column, † / ‡ where it separates."""
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
            cells.append(f"{-p.diff:+.3f}{p.mark}")
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    lines += [
        "",
        "- Cell: the row minus the column. Where both rows share ≥ 2 seeds: the mean of the per-seed differences on "
        "those seeds, † where its 95% CI (t_{0.975, n−1} · s_d / √n, s_d the std of the n per-seed differences) "
        "excludes 0; against a single fixed model (the student init), the other row's per-seed values minus its "
        "value, same rule.",
        "- Fewer than 2 shared seeds: the difference of the means, ‡ where it exceeds 2 × the larger seed std of the "
        "two rows (a heuristic, not a CI; no mark if neither row has a std).",
    ]
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------- paired vs SFT / KD


@dataclass
class PairedRow:
    label: str
    method: str
    reference: str  # the reference row's label
    reference_method: str
    seeds: list[int | None]  # the seeds both rows have
    diffs: dict[str, Diff | None]  # metric key -> row minus reference (None: no shared seed / no value)


@dataclass
class PairedTable:
    suite: str
    suite_hash: str
    metrics: list[Column]  # Avg., each primary task metric, KL(T||S)
    references: list[tuple[str, str]]  # (method, label) of SFT and KD when present
    rows: list[PairedRow]
    footnotes: list[str]


def _paired_metrics(lb: Leaderboard) -> list[Column]:
    by_key = {c.key: c for c in lb.columns}
    out = [by_key[AVERAGE]] if AVERAGE in by_key else []
    out += [c for c in lb.columns if in_average(c)]
    if HEADLINE in by_key:
        out.append(by_key[HEADLINE])
    return out


def build_paired(lb: Leaderboard) -> PairedTable:
    """Every method row against SFT and KD (those present), paired on seeds; see the module docstring."""
    metrics = _paired_metrics(lb)
    methods = [r for r in lb.rows if r.role == "method"]
    refs = [r for m in PAIRED_REFERENCES for r in methods if r.method == m]
    rows = []
    for ref in refs:
        for row in methods:
            if row is ref:
                continue
            seeds = [s for s in row.seeds if s is not None and s in ref.seeds]
            diffs = {}
            for col in metrics:
                d = compare(row.cells[col.key], ref.cells[col.key])
                diffs[col.key] = d if d is not None and d.rule == "paired" else None
            rows.append(PairedRow(row.label, str(row.method), ref.label, str(ref.method), seeds, diffs))
    ns = sorted({len(r.seeds) for r in rows})
    n_text = "n = " + (str(ns[0]) if len(ns) == 1 else f"{ns[0]}–{ns[-1]}") if ns else "n = 0"
    notes = [
        "Δ: the row's method minus the reference, per seed on the seeds both have (n, paired by model.seed), then "
        "the mean; ± the 95% CI half-width of the paired difference, t_{0.975, n−1} · s_d / √n (s_d: the std of "
        f"the n per-seed differences); † where the CI excludes 0 (no CI and no mark with n < 2). Here {n_text}.",
        "↑/↓: the metric's better direction (a positive Δ is better for ↑, a negative one for ↓). "
        "Avg.: as in the leaderboard (primary task metrics; its per-seed value is paired).",
    ]  # fmt: skip
    if not refs:
        notes = ["No SFT or KD rows: nothing to compare."]
    return PairedTable(lb.suite, lb.suite_hash, metrics, [(str(r.method), r.label) for r in refs], rows, notes)


def _diff_text(d: Diff | None) -> str:
    if d is None:
        return "–"
    if d.half is None:
        return f"{d.mean:+.3f}"
    return f"{d.mean:+.3f} ± {d.half:.3f}{'†' if d.significant else ''}"


def _metric_header(col: Column) -> str:
    return f"Δ {col.label} {'↑' if col.higher_is_better else '↓'}"


def render_paired(pt: PairedTable, fmt: str) -> str:
    """The paired comparisons as Markdown (one table per reference), long-form ``csv`` or ``json``."""
    if fmt == "md":
        refs = " and ".join(_md_escape(label) for _, label in pt.references) or "SFT or KD"
        parts = [f"**Paired comparisons** with {refs}, suite `{pt.suite}` (hash `{pt.suite_hash}`)", ""]
        for method, label in pt.references:
            rows = [r for r in pt.rows if r.reference_method == method]
            header = ["Method", "n", *[_md_escape(_metric_header(c)) for c in pt.metrics]]
            grid = [
                [_md_escape(r.label), str(len(r.seeds)), *[_diff_text(r.diffs[c.key]) for c in pt.metrics]]
                for r in rows
            ]
            parts += [f"vs {_md_escape(label)}:", "", _md_table(header, grid), ""]
        parts += [f"- {_md_escape(n)}" for n in pt.footnotes]
        return "\n".join(parts) + "\n"
    if fmt == "csv":
        header = ["reference", "method", "label", "metric", "n", "seeds", "mean_diff", "ci95", "ci95_low",
                  "ci95_high", "significant"]  # fmt: skip
        out = []
        for r in pt.rows:
            for c in pt.metrics:
                d = r.diffs[c.key]
                out.append([
                    r.reference_method, r.method, r.label, c.key, 0 if d is None else d.n,
                    ";".join(map(str, r.seeds)), _csv_num(None if d is None else d.mean),
                    _csv_num(None if d is None else d.half), _csv_num(None if d is None else d.low),
                    _csv_num(None if d is None else d.high), int(d is not None and d.significant),
                ])  # fmt: skip
        return _csv_text(header, out)
    if fmt == "json":
        return json.dumps(paired_to_dict(pt), indent=2) + "\n"
    raise ValueError(f"unknown format {fmt!r}; allowed: {', '.join(PAIRED_FORMATS)}")


def _diff_dict(d: Diff | None) -> dict[str, Any] | None:
    if d is None:
        return None
    return {"mean": d.mean, "ci95": d.half, "low": d.low, "high": d.high, "n": d.n, "significant": d.significant}


def paired_to_dict(pt: PairedTable) -> dict[str, Any]:
    rows = [
        {"reference": r.reference_method, "reference_label": r.reference, "method": r.method, "label": r.label,
         "seeds": r.seeds, "diffs": {k: _diff_dict(d) for k, d in r.diffs.items()}}
        for r in pt.rows
    ]  # fmt: skip
    return {"schema": "distillm-bench/paired/v1", "suite": pt.suite, "suite_hash": pt.suite_hash,
            "metrics": [vars(c) for c in pt.metrics], "references": [m for m, _ in pt.references], "rows": rows,
            "footnotes": pt.footnotes}  # fmt: skip
