"""Leaderboard and cost tables: a pure function from evaluation records to Markdown, LaTeX, CSV and JSON.

Records are the JSON files ``<run_dir>/records/*.json`` written by ``bench/run.py`` (schema
``distillm-bench/record/v1``, one per evaluated model and seed). Nothing here re-runs or re-scores anything:
``distillm-bench leaderboard RUN_DIR...`` re-renders from the records alone.

Table semantics (also stated in each table's footnote):

- rows: teacher, student init, then the methods in canonical order (sft, kd, seqkd, imitkd, gkd, distillm,
  distillm2, then others in order of first appearance);
- columns: the task metrics grouped by category (instruction, code, math, caption, then other categories), then
  fidelity (KL, NLL, ROUGE-L), then Avg., then Gap rec., then Δ;
- a cell is the mean ± the 95% confidence half-width over seeds, ``t_{0.975, n-1} · s / sqrt(n)`` (``s`` the
  sample std, ddof=1); a single value where n = 1;
- **Avg.** is, per seed, the mean of the primary higher-is-better task metrics (one per task: a metric whose
  ``metric_info`` says ``"primary": false`` is shown but not averaged), excluding fidelity and pipeline checks;
- **Gap rec.** is, per seed, ``(Avg. − Avg.(init)) / (Avg.(teacher) − Avg.(init))``: the fraction of the
  teacher–init gap the method recovers; "–" for the teacher and the init, and everywhere when the gap is 0;
- bold: the best student (every row but the teacher) per column, by ``higher_is_better``; ties are all bold, but
  a column where every student ties has no bold; pipeline-check columns are not compared;
- Δ: the change of the headline metric (``fidelity/kl`` if present, else Avg.) against the student init; † where
  the 95% CI of that change excludes 0 (see :func:`compare`; rows with a single seed get no mark).

Method-vs-method comparisons (paired on seeds) are in ``bench/separation.py``.

Records that disagree on schema, suite_hash, a task version or a metric's definition are refused with one line
naming both records and the field (:class:`RecordError`, a ``ValueError``), as are duplicate (role, method, seed).
"""

from __future__ import annotations

import csv
import functools
import io
import json
import math
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from distill.methods import COMPARED

SCHEMA = "distillm-bench/record/v1"
ROLES = ("teacher", "student-init", "method")
TASK_CATEGORY_ORDER = ("instruction", "code", "math", "caption")  # then other task categories, then fidelity
CATEGORY_ORDER = (*TASK_CATEGORY_ORDER, "fidelity")
FIDELITY_ORDER = ("fidelity/kl", "fidelity/nll", "fidelity/rouge_l")
METHOD_ORDER = tuple(COMPARED)  # the compared methods in this order; any other method after them, as first seen
FORMATS = ("md", "latex", "csv", "json")
AVERAGE = "average"
GAP = "gap_recovered"
HEADLINE = "fidelity/kl"
REFERENCE_METHOD = "kd"

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


class RecordError(ValueError):
    """Records that cannot be tabulated (unreadable, inconsistent, duplicated). One line; CLI exit status 2."""


@dataclass(frozen=True)
class Column:
    key: str  # metric name, e.g. "fidelity/kl", or AVERAGE / GAP
    label: str
    category: str  # "" for the average and gap columns
    higher_is_better: bool
    pipeline_check: bool = False
    primary: bool = True  # False: shown, but not counted in Avg. (a task's secondary metric)


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


@dataclass
class Row:
    label: str
    role: str
    method: str | None
    seeds: list[int | None]
    cells: dict[str, Stat]
    delta: float | None = None
    delta_ci95: float | None = None
    delta_significant: bool = False
    best: set[str] = field(default_factory=set)  # column keys where this row is (tied) best


@dataclass
class Leaderboard:
    suite: str
    suite_hash: str
    run_ids: list[str]
    columns: list[Column]
    rows: list[Row]
    headline: str | None  # column key of the Δ column's metric
    footnotes: list[str]
    gap: float | None = None  # Avg.(teacher) − Avg.(init), None without both rows


# --------------------------------------------------------------------------- records


def load_records(run_dirs: list[Path]) -> list[dict[str, Any]]:
    """Read ``<run_dir>/records/*.json`` of every run dir (sorted by name). Each dict gets ``_source`` (its path)."""
    records = []
    for run_dir in run_dirs:
        files = sorted(Path(run_dir, "records").glob("*.json"))
        if not files:
            raise RecordError(f"no records under {Path(run_dir, 'records')}")
        for path in files:
            try:
                rec = json.loads(path.read_text())
            except (OSError, json.JSONDecodeError) as err:
                raise RecordError(f"cannot read record {path}: {err}") from err
            if not isinstance(rec, dict):
                raise RecordError(f"record {path} is not a JSON object")
            rec["_source"] = str(path)
            records.append(rec)
    return records


def _name(rec: dict[str, Any]) -> str:
    if "_source" in rec:
        return str(rec["_source"])
    model = rec.get("model") or {}
    return f"{model.get('role')}/{model.get('method')}/seed={model.get('seed')}"


def _model(rec: dict[str, Any]) -> dict[str, Any]:
    model = rec.get("model")
    if not isinstance(model, dict) or model.get("role") not in ROLES:
        raise RecordError(f"record {_name(rec)}: model.role must be one of {', '.join(ROLES)}")
    if model["role"] == "method" and not model.get("method"):
        raise RecordError(f"record {_name(rec)}: a method record needs model.method")
    return model


_INFO_DEFAULTS = {"category": None, "higher_is_better": None, "pipeline_check": None, "primary": True}


def check_records(records: list[dict[str, Any]]) -> None:
    """Refuse records that must not share a table (see the module docstring)."""
    if not records:
        raise RecordError("no records to tabulate")
    first = records[0]
    versions: dict[str, tuple[Any, dict]] = {}
    infos: dict[str, tuple[dict, dict]] = {}
    keys: dict[tuple, dict] = {}
    for rec in records:
        if rec.get("schema") != SCHEMA:
            raise RecordError(f"record {_name(rec)}: schema {rec.get('schema')!r} is not {SCHEMA!r}")
        if not isinstance(rec.get("metrics"), dict):
            raise RecordError(f"record {_name(rec)}: no metrics object")
        if rec.get("suite_hash") != first.get("suite_hash"):
            raise _disagree(first, rec, "suite_hash", first.get("suite_hash"), rec.get("suite_hash"))
        for task, version in (rec.get("task_versions") or {}).items():
            other = versions.setdefault(task, (version, rec))
            if other[0] != version:
                raise _disagree(other[1], rec, f"task_versions[{task!r}]", other[0], version)
        for metric, info in (rec.get("metric_info") or {}).items():
            other_info, other_rec = infos.setdefault(metric, (info, rec))
            for attr, default in _INFO_DEFAULTS.items():
                if other_info.get(attr, default) != info.get(attr, default):
                    raise _disagree(
                        other_rec, rec, f"metric_info[{metric!r}].{attr}", other_info.get(attr, default),
                        info.get(attr, default),
                    )  # fmt: skip
        model = _model(rec)
        key = (model["role"], model.get("method"), model.get("seed"))
        if key in keys:
            raise RecordError(
                f"records {_name(keys[key])} and {_name(rec)} are duplicates of (role, method, seed) {key}"
            )
        keys[key] = rec


def _disagree(a: dict, b: dict, what: str, va: Any, vb: Any) -> RecordError:
    return RecordError(f"records {_name(a)} and {_name(b)} disagree on {what} ({va!r} vs {vb!r}); never mixed")


# --------------------------------------------------------------------------- leaderboard


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return None
    return float(value)


def _column_rank(col: Column) -> tuple[int, int]:
    """Task categories in TASK_CATEGORY_ORDER, then other task categories, then fidelity (KL, NLL, ROUGE-L, ...)."""
    if col.category == "fidelity":
        sub = FIDELITY_ORDER.index(col.key) if col.key in FIDELITY_ORDER else len(FIDELITY_ORDER)
        return (len(TASK_CATEGORY_ORDER) + 1, sub)
    if col.category in TASK_CATEGORY_ORDER:
        return (TASK_CATEGORY_ORDER.index(col.category), 0)
    return (len(TASK_CATEGORY_ORDER), 0)


def _columns(records: list[dict[str, Any]]) -> list[Column]:
    seen: dict[str, Column] = {}
    for rec in records:
        infos = rec.get("metric_info") or {}
        for key in [*infos, *rec["metrics"]]:
            if key in seen:
                continue
            info = infos.get(key) or {}
            category = info.get("category") or (key.split("/")[0] if key.startswith("fidelity/") else "other")
            seen[key] = Column(
                key, str(info.get("label") or key), category, bool(info.get("higher_is_better", True)),
                bool(info.get("pipeline_check", False)), bool(info.get("primary", True)),
            )  # fmt: skip
    cols = sorted(seen.values(), key=_column_rank)  # stable: keeps first appearance within a rank
    if any(in_average(c) for c in cols):
        cols.append(Column(AVERAGE, "Avg.", "", True))
    return cols


def in_average(col: Column) -> bool:
    """Whether a column counts in Avg.: a primary, higher-is-better task metric that is not a pipeline check."""
    return col.higher_is_better and col.primary and not col.pipeline_check and col.category not in ("fidelity", "")


def _group_key(model: dict[str, Any], first_seen: dict[tuple, int]) -> tuple:
    role_rank = ROLES.index(model["role"])
    method = model.get("method")
    method_rank = METHOD_ORDER.index(method) if method in METHOD_ORDER else len(METHOD_ORDER)
    return (role_rank, method_rank, first_seen[(model["role"], method)])


def _seed_order(rec: dict[str, Any]) -> tuple:
    seed = rec["model"].get("seed")
    return (seed is not None, seed if isinstance(seed, (int, float)) else 0, str(seed))


def group_records(records: list[dict[str, Any]]) -> list[tuple[tuple[str, str | None], list[dict[str, Any]]]]:
    """``((role, method), records sorted by seed)`` in leaderboard row order."""
    groups: dict[tuple, list[dict]] = {}
    for rec in records:
        model = _model(rec)
        groups.setdefault((model["role"], model.get("method")), []).append(rec)
    first_seen = {k: i for i, k in enumerate(groups)}
    ordered = sorted(groups.items(), key=lambda kv: _group_key(kv[1][0]["model"], first_seen))
    return [(k, sorted(recs, key=_seed_order)) for k, recs in ordered]


def _cell(recs: list[dict[str, Any]], value) -> Stat:
    pairs = [(r["model"].get("seed"), v) for r in recs if (v := value(r)) is not None]
    return Stat([v for _, v in pairs], [s for s, _ in pairs])


def build_leaderboard(records: list[dict[str, Any]]) -> Leaderboard:
    check_records(records)
    columns = _columns(records)
    averaged = [c.key for c in columns if in_average(c)]

    def average(rec: dict[str, Any]) -> float | None:
        values = [_number(rec["metrics"].get(k)) for k in averaged]
        return None if None in values else statistics.fmean(values)  # type: ignore[arg-type]

    rows = []
    for (role, method), recs in group_records(records):
        cells: dict[str, Stat] = {}
        for col in columns:
            if col.key == AVERAGE:
                cells[col.key] = _cell(recs, average)
            else:
                cells[col.key] = _cell(recs, lambda r, k=col.key: _number(r["metrics"].get(k)))
        default = {"teacher": "Teacher", "student-init": "Student init"}.get(role, str(method))
        label = str(recs[0]["model"].get("label") or default)
        rows.append(Row(label, role, method, [r["model"].get("seed") for r in recs], cells))

    keys = {c.key for c in columns}
    teacher = next((r for r in rows if r.role == "teacher"), None)
    init = next((r for r in rows if r.role == "student-init"), None)
    gap = None
    if AVERAGE in keys and teacher is not None and init is not None:
        t_avg, i_avg = teacher.cells[AVERAGE].mean, init.cells[AVERAGE].mean
        if t_avg is not None and i_avg is not None:
            gap = t_avg - i_avg
            columns.append(Column(GAP, "Gap rec.", "", True))
            for row in rows:
                avg = row.cells[AVERAGE]
                if row.role == "method" and abs(gap) > 1e-12:
                    row.cells[GAP] = Stat([(v - i_avg) / gap for v in avg.values], list(avg.seeds))
                else:
                    row.cells[GAP] = Stat([])

    headline = HEADLINE if HEADLINE in keys else (AVERAGE if AVERAGE in keys else None)
    _mark_best(columns, rows)
    if headline and init is not None and init.cells[headline].mean is not None:
        for row in rows:
            if row is init or (d := compare(row.cells[headline], init.cells[headline])) is None:
                continue
            row.delta, row.delta_ci95, row.delta_significant = d.mean, d.half, d.significant
    first = records[0]
    run_ids = list(dict.fromkeys(str(r.get("run_id", "")) for r in records))
    lb = Leaderboard(
        str(first.get("suite", "")), str(first.get("suite_hash", "")), run_ids, columns, rows, headline, [], gap
    )
    lb.footnotes = _footnotes(lb, init is not None)
    return lb


def _mark_best(columns: list[Column], rows: list[Row]) -> None:
    for col in columns:
        if col.pipeline_check:
            continue
        students = [r for r in rows if r.role != "teacher" and r.cells[col.key].mean is not None]
        if not students:
            continue
        pick = max if col.higher_is_better else min
        best = pick(r.cells[col.key].mean for r in students)  # type: ignore[type-var]
        tied = [r for r in students if math.isclose(r.cells[col.key].mean, best, rel_tol=1e-9, abs_tol=1e-12)]  # type: ignore[arg-type]
        if len(students) > 1 and len(tied) == len(students):
            continue  # every student ties: nothing is best
        for r in tied:
            r.best.add(col.key)


CI_NOTE = "95% CI half-width t_{0.975, n−1} · s / √n (s: the sample std over the n seeds)"


def _footnotes(lb: Leaderboard, has_init: bool) -> list[str]:
    notes = [
        f"Cells: mean ± the {CI_NOTE}; a single value where n = 1. "
        "↑/↓: higher/lower is better. Bold: best student per column (the teacher row excluded; ties all bold, "
        "none where every student ties)."
    ]
    if any(c.key == AVERAGE for c in lb.columns):
        note = (
            "Avg.: per seed, the mean of the primary higher-is-better task metrics (one per task), excluding "
            "fidelity and pipeline checks; then mean ± CI over seeds."
        )
        if any(not c.primary and c.category not in ("fidelity", "") for c in lb.columns):
            note += " ° a task's secondary metric: shown, not counted in Avg."
        notes.append(note)
    if any(c.key == GAP for c in lb.columns):
        note = (
            "Gap rec.: per seed, (Avg. − Avg.(init)) / (Avg.(teacher) − Avg.(init)), the fraction of the teacher–init "
            "gap in Avg. the method recovers (1 = all of it, < 0 = below the init); then mean ± CI; – for the "
            "teacher and the init"
        )
        notes.append(note + (", and everywhere here: the gap is 0." if lb.gap is not None and abs(lb.gap) <= 1e-12
                             else "."))  # fmt: skip
    if lb.headline:
        head = next(c for c in lb.columns if c.key == lb.headline)
        if has_init:
            notes.append(
                f"Δ: change of {head.label} ({'higher' if head.higher_is_better else 'lower'} is better) against the "
                "student init (one fixed model); † where the 95% CI of the change (t over the row's per-seed "
                "changes) excludes 0 (no mark with a single seed). Method vs method: paired.md."
            )
        else:
            notes.append("Δ: no student-init record, so no change is shown.")
    if any(c.pipeline_check for c in lb.columns):
        notes.append("* pipeline check: the teacher scores ≈ 0, no method difference is measurable (not bolded).")
    return notes


# --------------------------------------------------------------------------- formatting


def fmt_num(x: float) -> str:
    if abs(x) >= 100:
        return f"{x:.1f}"
    if abs(x) >= 10:
        return f"{x:.2f}"
    return f"{x:.3f}"


def _cell_text(stat: Stat, pm: str) -> str:
    if stat.mean is None:
        return "–"
    half = stat.ci95
    return fmt_num(stat.mean) if half is None else f"{fmt_num(stat.mean)}{pm}{fmt_num(half)}"


def _delta_text(row: Row, dagger: str) -> str:
    if row.delta is None:
        return "–"
    return f"{row.delta:+.3f}{dagger if row.delta_significant else ''}"


def _md_escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace("|", "\\|").replace("*", "\\*").replace("_", "\\_")


def _md_table(header: list[str], rows: list[list[str]]) -> str:
    """A pipe table (first column left-aligned, the others right-aligned)."""
    widths = [max(3, *(len(r[i]) for r in [header, *rows])) for i in range(len(header))]

    def line(cells: list[str]) -> str:
        padded = [c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths, strict=True))]
        return "| " + " | ".join(padded) + " |"

    sep = line(["-" * widths[0], *[("-" * (w - 1) + ":") for w in widths[1:]]])
    return "\n".join([line(header), sep, *[line(r) for r in rows]])


def _md_doc(title: str, header: list[str], rows: list[list[str]], notes: list[str]) -> str:
    """A title line, a pipe table and bullet footnotes."""
    return f"{title}\n\n{_md_table(header, rows)}\n\n" + "".join(f"- {_md_escape(n)}\n" for n in notes)


_TEX_CHARS = {
    "\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_", "{": r"\{", "}": r"\}",
    "~": r"\textasciitilde{}", "^": r"\textasciicircum{}", "|": r"\textbar{}", "<": r"\textless{}",
    ">": r"\textgreater{}", "±": r"$\pm$", "×": r"$\times$", "†": r"$^\dagger$", "‡": r"$^\ddagger$",
    "≈": r"$\approx$", "‖": r"$\|$", "Δ": r"$\Delta$", "φ": r"$\phi$", "α": r"$\alpha$", "β": r"$\beta$",
    "↑": r"$\uparrow$", "↓": r"$\downarrow$", "–": "--", "—": "---", "·": r"$\cdot$", "≥": r"$\geq$",
    "≤": r"$\leq$", "−": "$-$", "√": r"$\surd$", "°": r"$^\circ$",
}  # fmt: skip


def tex_escape(text: str) -> str:
    """Escape for LaTeX text mode (pdflatex-safe: other non-ASCII characters become '?')."""
    return "".join(_TEX_CHARS.get(ch, ch if ch.isascii() else "?") for ch in text)


def _tex_doc(caption: str, label: str, ncols: int, head: list[str], body: list[str], notes: list[str]) -> str:
    """A booktabs ``table`` float. The tabular is scaled down to the line width when it is wider and graphicx is
    loaded (``\resizebox``); without graphicx it keeps its natural width. Only booktabs is required."""
    note = " ".join(tex_escape(n).replace("* pipeline", "$^*$ pipeline") for n in notes)
    lines = [
        f"% distillm-bench {label}: needs \\usepackage{{booktabs}} (graphicx optional: scales the table to fit)",
        r"\begin{table}[t]",
        r"\centering",
        r"\small",
        rf"\caption{{{caption}}}",
        rf"\label{{tab:{label}}}",
        r"\setbox0=\hbox{%",
        r"\begin{tabular}{l" + "r" * (ncols - 1) + "}",
        r"\toprule",
        *head,
        r"\midrule",
        *body,
        r"\bottomrule",
        r"\end{tabular}}%",
        r"\ifdim\wd0>\linewidth\ifdefined\resizebox\resizebox{\linewidth}{!}{\box0}\else\box0\fi\else\box0\fi",
        r"\par\smallskip",
        r"\begin{minipage}{\linewidth}\footnotesize",
        note,
        r"\end{minipage}",
        r"\end{table}",
    ]
    return "\n".join(lines) + "\n"


def _secondary(col: Column) -> bool:
    return not col.primary and col.category not in ("fidelity", "")


def _header_label(col: Column) -> str:
    star = "*" if col.pipeline_check else ""
    ring = "°" if _secondary(col) else ""
    return f"{col.label}{star}{ring} {'↑' if col.higher_is_better else '↓'}"


def _tex_header(col: Column) -> str:
    star = "$^*$" if col.pipeline_check else ""
    ring = r"$^\circ$" if _secondary(col) else ""
    arrow = r"$\uparrow$" if col.higher_is_better else r"$\downarrow$"
    return f"{tex_escape(col.label)}{star}{ring} {arrow}"


def _delta_header(lb: Leaderboard) -> str:
    head = next((c for c in lb.columns if c.key == lb.headline), None)
    return f"Δ {head.label}" if head else "Δ"


def _csv_text(header: list[str], rows: list[list[Any]]) -> str:
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\n").writerows([header, *rows])
    return buf.getvalue()


def _csv_num(x: float | None) -> str:
    return "" if x is None else repr(x)


def render(lb: Leaderboard, fmt: str) -> str:
    """The leaderboard as Markdown (``md``), a LaTeX table float (``latex``), ``csv`` or ``json``."""
    if fmt == "md":
        header = ["Model", "n"]
        for col in lb.columns:
            header.append(_md_escape(f"{col.category.capitalize()}: " * bool(col.category) + _header_label(col)))
        rows = []
        for row in lb.rows:
            cells = [_md_escape(row.label), str(len(row.seeds))]
            for col in lb.columns:
                text = _cell_text(row.cells[col.key], " ± ")
                cells.append(f"**{text}**" if col.key in row.best else text)
            rows.append([*cells, _delta_text(row, "†")])
        title = f"**Leaderboard**: suite `{lb.suite}` (hash `{lb.suite_hash}`), run {', '.join(lb.run_ids)}"
        return _md_doc(title, [*header, _md_escape(_delta_header(lb))], rows, lb.footnotes)
    if fmt == "latex":
        return _render_latex(lb)
    if fmt == "csv":
        header = ["model", "role", "method", "n", "seeds"]
        header += [f"{c.key}/{stat}" for c in lb.columns for stat in ("mean", "ci95", "std", "n")]
        rows = []
        for row in lb.rows:
            line: list[Any] = [row.label, row.role, row.method or "", len(row.seeds), ";".join(map(str, row.seeds))]
            for c in lb.columns:
                s = row.cells[c.key]
                line += [_csv_num(s.mean), _csv_num(s.ci95), _csv_num(s.std), s.n]
            best = ";".join(c.key for c in lb.columns if c.key in row.best)
            rows.append([*line, _csv_num(row.delta), _csv_num(row.delta_ci95), int(row.delta_significant), best])
        return _csv_text([*header, "delta", "delta_ci95", "delta_significant", "best"], rows)
    if fmt == "json":
        return json.dumps(leaderboard_to_dict(lb), indent=2) + "\n"
    raise ValueError(f"unknown format {fmt!r}; allowed: {', '.join(FORMATS)}")


def _tex_category_header(columns: list[Column], offset: int) -> list[str]:
    """The ``\\multicolumn`` category row and its ``\\cmidrule``s; ``offset`` leading columns stay empty."""
    spans: list[tuple[str, int, int]] = []  # (category, first column index, count)
    for i, col in enumerate(columns):
        if spans and spans[-1][0] == col.category:
            spans[-1] = (col.category, spans[-1][1], spans[-1][2] + 1)
        else:
            spans.append((col.category, i, 1))
    cells, rules = [""] * offset, []
    for category, start, count in spans:
        if not category:
            cells.extend([""] * count)
            continue
        cells.append(rf"\multicolumn{{{count}}}{{c}}{{{tex_escape(category.capitalize())}}}")
        first = offset + start + 1
        rules.append(rf"\cmidrule(lr){{{first}-{first + count - 1}}}")
    return [" & ".join(cells) + r" \\", " ".join(rules)]


def _render_latex(lb: Leaderboard) -> str:
    header = ["Model", "$n$", *[_tex_header(c) for c in lb.columns], tex_escape(_delta_header(lb))]
    body: list[str] = []
    for i, row in enumerate(lb.rows):
        if i and row.role != lb.rows[i - 1].role and lb.rows[i - 1].role != "student-init":
            body.append(r"\midrule")  # the teacher apart from the students
        cells = [tex_escape(row.label), str(len(row.seeds))]
        for col in lb.columns:
            text = _cell_text(row.cells[col.key], r" $\pm$ ").replace("–", "--")
            cells.append(rf"\textbf{{{text}}}" if col.key in row.best else text)
        delta = _delta_text(row, r"$^\dagger$").replace("–", "--")
        cells.append("$-$" + delta[1:] if delta.startswith("-") else delta)
        body.append(" & ".join(cells) + r" \\")
    caption = (
        f"Leaderboard of suite \\texttt{{{tex_escape(lb.suite)}}} "
        f"(suite hash \\texttt{{{tex_escape(lb.suite_hash)}}}; run {tex_escape(', '.join(lb.run_ids))})."
    )
    head = [*_tex_category_header(lb.columns, offset=2), " & ".join(header) + r" \\"]
    return _tex_doc(caption, "leaderboard", len(header), head, body, lb.footnotes)


def leaderboard_to_dict(lb: Leaderboard) -> dict[str, Any]:
    rows = [
        {"label": r.label, "role": r.role, "method": r.method, "seeds": r.seeds,
         "cells": {k: {"mean": s.mean, "ci95": s.ci95, "std": s.std, "n": s.n, "values": s.values,
                       "seeds": s.seeds} for k, s in r.cells.items()},
         "delta": r.delta, "delta_ci95": r.delta_ci95, "delta_significant": r.delta_significant,
         "best": [c.key for c in lb.columns if c.key in r.best]}
        for r in lb.rows
    ]  # fmt: skip
    return {"schema": "distillm-bench/leaderboard/v2", "suite": lb.suite, "suite_hash": lb.suite_hash,
            "run_ids": lb.run_ids, "headline": lb.headline, "gap": lb.gap,
            "columns": [vars(c) for c in lb.columns], "rows": rows, "footnotes": lb.footnotes}  # fmt: skip


# --------------------------------------------------------------------------- cost table

COST_FIELDS = (  # (train key, header)
    ("wall_s", "Train wall time (s)"),
    ("tokens_per_s", "Tokens/s"),
    ("generation_share", "Generation share"),
    ("peak_rss_mib", "Peak memory (MiB)"),
)
SETUP_FIELDS = (  # shown when any record's train summary has setup_generation_s
    ("setup_generation_s", "Teacher gen. (s)"),
    ("total_s", "Total (s)"),
)


@dataclass
class CostRow:
    label: str
    method: str
    seeds: list[int | None]
    cells: dict[str, Stat]  # field key -> per-seed values
    ratios: dict[str, float | None]  # mean / KD's mean


@dataclass
class CostTable:
    suite: str
    suite_hash: str
    rows: list[CostRow]
    reference: str | None  # the method the ratios are relative to (KD), None when absent
    footnotes: list[str]
    fields: tuple[tuple[str, str], ...] = COST_FIELDS  # (key, header) in column order


def _cost_values(train: dict[str, Any], setup: bool) -> dict[str, float | None]:
    out = {key: _number(train.get(key)) for key, _ in COST_FIELDS}
    if setup:
        gen = _number(train.get("setup_generation_s")) or 0.0  # absent: no teacher generation before training
        out["setup_generation_s"] = gen
        out["total_s"] = None if out["wall_s"] is None else out["wall_s"] + gen
    return out


def build_cost_table(records: list[dict[str, Any]]) -> CostTable:
    """One row per method (teacher and student init excluded), in leaderboard order: each cost's mean over seeds
    and its ratio to KD."""
    check_records(records)
    groups = [(key, recs) for key, recs in group_records(records) if key[0] == "method"]
    setup = any("setup_generation_s" in (r.get("train") or {}) for _, recs in groups for r in recs)
    fields = (COST_FIELDS[0], *SETUP_FIELDS, *COST_FIELDS[1:]) if setup else COST_FIELDS
    rows = []
    for (_, method), recs in groups:
        per_rec = [(r, _cost_values(r.get("train") or {}, setup)) for r in recs]
        cells: dict[str, Stat] = {}
        for key, _ in fields:
            pairs = [(r["model"].get("seed"), v[key]) for r, v in per_rec if v[key] is not None]
            cells[key] = Stat([v for _, v in pairs], [s for s, _ in pairs])
        label = str(recs[0]["model"].get("label") or method)
        rows.append(CostRow(label, str(method), [r["model"].get("seed") for r in recs], cells, {}))
    ref = next((r for r in rows if r.method == REFERENCE_METHOD), None)
    for row in rows:
        for key, _ in fields:
            base = ref.cells[key].mean if ref else None
            mean = row.cells[key].mean
            row.ratios[key] = mean / base if mean is not None and base else None
    notes = [
        "Mean over seeds of each method's training stage, rows in leaderboard order. Generation share: generation "
        "time / train wall time. Peak memory: peak resident set size."
    ]
    if setup:
        notes.append(
            "Teacher gen.: teacher generation done before training (e.g. SeqKD's teacher samples; 0 where a method "
            "has none). Total: train wall time + teacher gen."
        )
    if ref:
        notes.append(
            f"×{ref.label}: the mean divided by {ref.label}'s ({ref.label} = 1.00×), as in DistiLLM's efficiency "
            f"comparison; – where {ref.label}'s value is 0 or missing."
        )
    else:
        notes.append("No KD row: ratios are not shown.")
    first = records[0]
    return CostTable(
        str(first.get("suite", "")), str(first.get("suite_hash", "")), rows, ref.label if ref else None, notes,
        fields,
    )  # fmt: skip


_WHOLE_SECONDS = ("tokens_per_s", "peak_rss_mib")


def _cost_value(key: str, stat: Stat) -> str:
    if stat.mean is None:
        return "–"
    if key == "generation_share":
        return f"{100 * stat.mean:.0f}%"
    return f"{stat.mean:.0f}" if key in _WHOLE_SECONDS else f"{stat.mean:.1f}"


def _ratio_text(x: float | None, times: str) -> str:
    return "–" if x is None else f"{x:.2f}{times}"


def _cost_grid(cost: CostTable, times: str) -> tuple[list[str], list[list[str]]]:
    header = ["Method", "n"]
    for _, title in cost.fields:
        header += [title, f"×{cost.reference}"] if cost.reference else [title]
    rows = []
    for row in cost.rows:
        cells = [row.label, str(len(row.seeds))]
        for key, _ in cost.fields:
            cells.append(_cost_value(key, row.cells[key]))
            if cost.reference:
                cells.append(_ratio_text(row.ratios[key], times))
        rows.append(cells)
    return header, rows


def render_cost(cost: CostTable, fmt: str) -> str:
    """The cost table as Markdown (``md``), a LaTeX table float (``latex``), ``csv`` or ``json``."""
    keys = [k for k, _ in cost.fields]
    if fmt in ("md", "latex"):
        header, rows = _cost_grid(cost, "×")
        if fmt == "md":
            title = f"**Cost per method**: suite `{cost.suite}` (hash `{cost.suite_hash}`)"
            return _md_doc(title, [_md_escape(h) for h in header], rows, cost.footnotes)
        caption = f"Training cost per method, suite \\texttt{{{tex_escape(cost.suite)}}}."
        head = [" & ".join(tex_escape(h) for h in header) + r" \\"]
        body = [" & ".join(tex_escape(c) for c in r) + r" \\" for r in rows]
        return _tex_doc(caption, "cost", len(header), head, body, cost.footnotes)
    if fmt == "csv":
        header = ["method", "label", "n", *keys, *[f"{k}/ratio_to_{REFERENCE_METHOD}" for k in keys]]
        rows = [
            [r.method, r.label, len(r.seeds), *[_csv_num(r.cells[k].mean) for k in keys],
             *[_csv_num(r.ratios[k]) for k in keys]]
            for r in cost.rows
        ]  # fmt: skip
        return _csv_text(header, rows)
    if fmt == "json":
        rows = [
            {"method": r.method, "label": r.label, "seeds": r.seeds, "mean": {k: s.mean for k, s in r.cells.items()},
             "values": {k: s.values for k, s in r.cells.items()}, "ratio": r.ratios}
            for r in cost.rows
        ]  # fmt: skip
        out = {"schema": "distillm-bench/cost/v1", "suite": cost.suite, "suite_hash": cost.suite_hash,
               "reference": cost.reference, "fields": keys, "rows": rows, "footnotes": cost.footnotes}  # fmt: skip
        return json.dumps(out, indent=2) + "\n"
    raise ValueError(f"unknown format {fmt!r}; allowed: {', '.join(FORMATS)}")
