"""Leaderboard and cost tables, built from evaluation records (``bench/render.py`` writes them as Markdown, LaTeX, CSV
and JSON).

Records are the files ``<run_dir>/records/*.json`` written by ``bench/run_eval.py`` (one per evaluated model and
seed; their schema and validation: ``bench/record.py``). Nothing here re-runs or re-scores anything:
``distillm-bench leaderboard RUN_DIR...`` re-renders from the records alone.

Table semantics (also stated in each table's footnote):

- rows: teacher, student init, then the methods in canonical order (sft, kd, seqkd, imitkd, gkd, distillm,
  distillm2, then others in order of first appearance);
- columns: the task metrics grouped by category (instruction, code, math, caption, then other categories), then
  fidelity (KL, NLL, ROUGE-L), then Avg., then Gap rec., then Δ;
- a cell is the mean ± the 95% confidence half-width over seeds, ``t_{0.975, n-1} · s / sqrt(n)`` (``s`` the
  sample std, ddof=1); a single value where n = 1;
- **Avg.** is, per seed, the mean of the primary higher-is-better task metrics (one per task: a metric whose
  record says ``"primary": false`` is shown but not averaged), excluding fidelity and pipeline checks;
- **Gap rec.** is, per seed, ``(Avg. − Avg.(init)) / (Avg.(teacher) − Avg.(init))``: the fraction of the
  teacher–init gap the method recovers; "–" for the teacher and the init, and everywhere when the gap is 0;
- bold: the best student (every row but the teacher) per column, by ``higher_is_better``; ties are all bold, but
  a column where every student ties has no bold; pipeline-check columns are not compared;
- Δ: the change of the headline metric (``fidelity/kl`` if present, else Avg.) against the student init; † where
  the 95% CI of that change excludes 0 (see :func:`compare`; rows with a single seed get no mark).

Method-vs-method comparisons (paired on seeds) are in ``bench/separation.py``.

Records that fail validation, or disagree on suite_hash, a task version or a metric's definition, are refused with one line
naming both records and the field (:class:`RecordError`, a ``ValueError``), as are duplicate (role, method, seed).
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.record import SCHEMA, Metric, Record, RecordError, TrainCost, as_records  # noqa: F401  (SCHEMA: re-exported)
from bench.stats import Diff, Stat, ci_half, compare, t_crit, t_table  # noqa: F401  (re-exported)
from distill.methods import COMPARED

ROLES = ("teacher", "student-init", "method")
TASK_CATEGORY_ORDER = ("instruction", "code", "math", "caption", "vqa")  # then other task categories, then fidelity
CATEGORY_ORDER = (*TASK_CATEGORY_ORDER, "fidelity")
FIDELITY_ORDER = ("fidelity/kl", "fidelity/nll", "fidelity/rouge_l")
METHOD_ORDER = tuple(COMPARED)  # the compared methods in this order; any other method after them, as first seen
FORMATS = ("md", "latex", "csv", "json")
AVERAGE = "average"
GAP = "gap_recovered"
HEADLINE = "fidelity/kl"
REFERENCE_METHOD = "kd"


@dataclass(frozen=True)
class Column:
    key: str  # metric name, e.g. "fidelity/kl", or AVERAGE / GAP
    label: str
    category: str  # "" for the average and gap columns
    higher_is_better: bool
    pipeline_check: bool = False
    primary: bool = True  # False: shown, but not counted in Avg. (a task's secondary metric)


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


def load_records(run_dirs: list[Path]) -> list[Record]:
    """Read and validate ``<run_dir>/records/*.json`` of every run dir (sorted by name)."""
    records = []
    for run_dir in run_dirs:
        files = sorted(Path(run_dir, "records").glob("*.json"))
        if not files:
            raise RecordError(f"no records under {Path(run_dir, 'records')}")
        records.extend(Record.read(path) for path in files)
    return records


def check_records(records: list[Any]) -> list[Record]:
    """The records, validated, if they may share a table (see the module docstring); else :class:`RecordError`."""
    records = as_records(records)
    if not records:
        raise RecordError("no records to tabulate")
    first = records[0]
    versions: dict[str, tuple[Any, Record]] = {}
    defs: dict[str, tuple[Metric, Record]] = {}
    keys: dict[tuple, Record] = {}
    for rec in records:
        if rec.model.role not in ROLES:
            raise RecordError(f"record {rec.name}: model.role must be one of {', '.join(ROLES)}")
        if rec.suite_hash != first.suite_hash:
            raise _disagree(first, rec, "suite_hash", first.suite_hash, rec.suite_hash)
        for task, entry in rec.tasks.items():
            other = versions.setdefault(task, (entry.version, rec))
            if other[0] != entry.version:
                raise _disagree(other[1], rec, f"tasks[{task!r}].version", other[0], entry.version)
        for key, metric in rec.metrics.items():
            other_metric, other_rec = defs.setdefault(key, (metric, rec))
            for attr in Metric.DEFINITION:
                if getattr(other_metric, attr) != getattr(metric, attr):
                    raise _disagree(
                        other_rec, rec, f"metrics[{key!r}].{attr}", getattr(other_metric, attr), getattr(metric, attr)
                    )
        key = (rec.model.role, rec.model.method, rec.model.seed)
        if key in keys:
            raise RecordError(f"records {keys[key].name} and {rec.name} are duplicates of (role, method, seed) {key}")
        keys[key] = rec
    return records


def _disagree(a: Record, b: Record, what: str, va: Any, vb: Any) -> RecordError:
    return RecordError(f"records {a.name} and {b.name} disagree on {what} ({va!r} vs {vb!r}); never mixed")


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


def metric_columns(records: list[Record]) -> list[Column]:
    """The columns of ``records``' metrics (with their direction and category), in table order, plus Avg."""
    seen: dict[str, Column] = {}
    for rec in records:
        for key, m in rec.metrics.items():
            if key not in seen:
                seen[key] = Column(key, m.label, m.category, m.higher_is_better, m.pipeline_check, m.primary)
    cols = sorted(seen.values(), key=_column_rank)  # stable: keeps first appearance within a rank
    if any(in_average(c) for c in cols):
        cols.append(Column(AVERAGE, "Avg.", "", True))
    return cols


def in_average(col: Column) -> bool:
    """Whether a column counts in Avg.: a primary, higher-is-better task metric that is not a pipeline check."""
    return col.higher_is_better and col.primary and not col.pipeline_check and col.category not in ("fidelity", "")


def _group_key(rec: Record, first_seen: dict[tuple, int]) -> tuple:
    role_rank = ROLES.index(rec.model.role)
    method = rec.model.method
    method_rank = METHOD_ORDER.index(method) if method in METHOD_ORDER else len(METHOD_ORDER)
    return (role_rank, method_rank, first_seen[(rec.model.role, method)])


def _seed_order(rec: Record) -> tuple:
    seed = rec.model.seed
    return (seed is not None, seed if isinstance(seed, (int, float)) else 0, str(seed))


def group_records(records: list[Any]) -> list[tuple[tuple[str, str | None], list[Record]]]:
    """``((role, method), records sorted by seed)`` in leaderboard row order."""
    groups: dict[tuple, list[Record]] = {}
    for rec in as_records(records):
        groups.setdefault((rec.model.role, rec.model.method), []).append(rec)
    first_seen = {k: i for i, k in enumerate(groups)}
    ordered = sorted(groups.items(), key=lambda kv: _group_key(kv[1][0], first_seen))
    return [(k, sorted(recs, key=_seed_order)) for k, recs in ordered]


def _cell(recs: list[Record], value) -> Stat:
    pairs = [(r.model.seed, v) for r in recs if (v := value(r)) is not None]
    return Stat([v for _, v in pairs], [s for s, _ in pairs])


def record_average(rec: Record, keys: list[str]) -> float | None:
    """The mean of ``rec``'s values of ``keys`` (None if any is missing)."""
    values = [rec.value(k) for k in keys]
    return None if None in values else statistics.fmean(values)  # type: ignore[arg-type]


def build_leaderboard(records: list[Any]) -> Leaderboard:
    records = check_records(records)
    columns = metric_columns(records)
    averaged = [c.key for c in columns if in_average(c)]

    def average(rec: Record) -> float | None:
        return record_average(rec, averaged)

    rows = []
    for (role, method), recs in group_records(records):
        cells: dict[str, Stat] = {}
        for col in columns:
            if col.key == AVERAGE:
                cells[col.key] = _cell(recs, average)
            else:
                cells[col.key] = _cell(recs, lambda r, k=col.key: r.value(k))
        default = {"teacher": "Teacher", "student-init": "Student init"}.get(role, str(method))
        label = str(recs[0].model.label or default)
        rows.append(Row(label, role, method, [r.model.seed for r in recs], cells))

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
    run_ids = list(dict.fromkeys(r.run_id for r in records))
    lb = Leaderboard(first.suite or "", first.suite_hash or "", run_ids, columns, rows, headline, [], gap)
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


def _cost_values(cost: TrainCost | None, setup: bool) -> dict[str, float | None]:
    out: dict[str, float | None] = {key: None if cost is None else getattr(cost, key) for key, _ in COST_FIELDS}
    if setup:
        gen = (cost.setup_generation_s if cost else None) or 0.0  # not recorded: no teacher generation before training
        out["setup_generation_s"] = gen
        out["total_s"] = None if out["wall_s"] is None else out["wall_s"] + gen
    return out


def build_cost_table(records: list[Any]) -> CostTable:
    """One row per method (teacher and student init excluded), in leaderboard order: each cost's mean over seeds
    and its ratio to KD."""
    records = check_records(records)
    groups = [(key, recs) for key, recs in group_records(records) if key[0] == "method"]
    costs = {id(r): r.train for _, recs in groups for r in recs}
    setup = any(c is not None and c.setup_generation_s is not None for c in costs.values())
    fields = (COST_FIELDS[0], *SETUP_FIELDS, *COST_FIELDS[1:]) if setup else COST_FIELDS
    rows = []
    for (_, method), recs in groups:
        per_rec = [(r, _cost_values(costs[id(r)], setup)) for r in recs]
        cells: dict[str, Stat] = {}
        for key, _ in fields:
            pairs = [(r.model.seed, v[key]) for r, v in per_rec if v[key] is not None]
            cells[key] = Stat([v for _, v in pairs], [s for s, _ in pairs])
        label = str(recs[0].model.label or method)
        rows.append(CostRow(label, str(method), [r.model.seed for r in recs], cells, {}))
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
    return CostTable(first.suite or "", first.suite_hash or "", rows, ref.label if ref else None, notes, fields)
