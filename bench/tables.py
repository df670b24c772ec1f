"""Every table of a run directory, written at once: the leaderboard, the cost table, the paired comparisons and
the separation table; and a suite's ``<output_root>/benchmarks/<suite>-throughput.{md,json}``. (It sits above ``bench/leaderboard.py`` and ``bench/separation.py``, so neither imports the
other's writer: no import cycle.)"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from bench.leaderboard import build_cost_table, build_leaderboard, load_records
from bench.record import as_records
from bench.render import render, render_cost
from bench.separation import build_paired, render_md, render_paired
from distill.atomic import atomic_write_json, atomic_write_text

if TYPE_CHECKING:
    from bench.suite import SuiteConfig

TABLE_FILES = {
    "md": "leaderboard.md",
    "latex": "leaderboard.tex",
    "csv": "leaderboard.csv",
    "json": "leaderboard.json",
}
COST_FILES = {"md": "cost.md", "latex": "cost.tex", "csv": "cost.csv"}
PAIRED_FILES = {"md": "paired.md", "csv": "paired.csv", "json": "paired.json"}


def write_all(run_dir: Path, records: list[Any] | None = None) -> list[Path]:
    """Write the leaderboard (md, tex, csv, json), the cost table (md, tex, csv), the paired comparisons with SFT
    and KD (md, csv, json; when either is present) and ``separation.md`` into ``run_dir``, atomically.

    ``records`` defaults to the run dir's own records; pass them to render several run dirs into one place.
    """
    run_dir = Path(run_dir)
    records = load_records([run_dir]) if records is None else as_records(records)
    lb, cost = build_leaderboard(records), build_cost_table(records)
    written = []
    for fmt, name in TABLE_FILES.items():
        atomic_write_text(run_dir / name, render(lb, fmt))
        written.append(run_dir / name)
    for fmt, name in COST_FILES.items():
        atomic_write_text(run_dir / name, render_cost(cost, fmt))
        written.append(run_dir / name)
    paired = build_paired(lb)
    if paired.rows:
        for fmt, name in PAIRED_FILES.items():
            atomic_write_text(run_dir / name, render_paired(paired, fmt))
            written.append(run_dir / name)
    if lb.headline is not None:
        atomic_write_text(run_dir / "separation.md", render_md(lb))
        written.append(run_dir / "separation.md")
    return written


def write_throughput(cfg: SuiteConfig, records: list[Any], threads: dict[str, Any]) -> list[Path]:
    """Tokens/s per method of this run, under ``<output_root>/benchmarks/<suite>-throughput.{md,json}``."""
    from bench.run_eval import run_provenance

    records = as_records(records)
    if not any(r.model.role == "method" for r in records):
        return []
    root = Path(cfg.output_root) / "benchmarks"
    table = render_cost(build_cost_table(records), "md")
    note = f"Run `{cfg.resolved_run_id}`; threads: {threads['note']}.\n"
    per_method: dict[str, list[float]] = {}
    for r in records:
        if r.model.role == "method" and r.train is not None:
            per_method.setdefault(str(r.model.method), []).append(r.train.tokens_per_s)
    data = {
        "suite": cfg.name,
        "run_id": cfg.resolved_run_id,
        "threads": threads,
        "tokens_per_s": per_method,
        "provenance": run_provenance(cfg) | {"suite_config": None},
    }
    md_path, json_path = root / f"{cfg.name}-throughput.md", root / f"{cfg.name}-throughput.json"
    atomic_write_text(md_path, table + "\n" + note)
    atomic_write_json(json_path, data)
    return [md_path, json_path]
