"""Every table of a run directory, written at once: the leaderboard, the cost table, the paired comparisons and
the separation table. (It sits above ``bench/leaderboard.py`` and ``bench/separation.py``, so neither imports the
other's writer: no import cycle.)"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from bench.leaderboard import build_cost_table, build_leaderboard, load_records, render, render_cost
from bench.separation import build_paired, render_md, render_paired
from distill.atomic import atomic_write_text

TABLE_FILES = {
    "md": "leaderboard.md",
    "latex": "leaderboard.tex",
    "csv": "leaderboard.csv",
    "json": "leaderboard.json",
}
COST_FILES = {"md": "cost.md", "latex": "cost.tex", "csv": "cost.csv"}
PAIRED_FILES = {"md": "paired.md", "csv": "paired.csv", "json": "paired.json"}


def write_all(run_dir: Path, records: list[dict[str, Any]] | None = None) -> list[Path]:
    """Write the leaderboard (md, tex, csv, json), the cost table (md, tex, csv), the paired comparisons with SFT
    and KD (md, csv, json; when either is present) and ``separation.md`` into ``run_dir``, atomically.

    ``records`` defaults to the run dir's own records; pass them to render several run dirs into one place.
    """
    run_dir = Path(run_dir)
    records = load_records([run_dir]) if records is None else records
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
