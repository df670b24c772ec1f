"""``distillm-bench tasks``: list the registered tasks (name, category, version, source, examples, metrics, file)."""

from __future__ import annotations

import argparse

from bench.errors import CLIError


def task_file(task: object) -> str:
    """The file that registers ``task``, relative to the repository (e.g. ``tasks/world_pick.py``)."""
    import inspect
    from pathlib import Path

    path = Path(inspect.getfile(type(task))).resolve()
    root = Path(__file__).resolve().parent.parent
    return str(path.relative_to(root)) if path.is_relative_to(root) else str(path)


def task_rows(category: str | None = None, count: bool = True) -> list[list[object]]:
    from tasks import TASKS, get_task
    from tasks.base import TaskDataError

    rows = []
    for name in sorted(TASKS):
        task = get_task(name)
        if category and task.category != category:
            continue
        n: object = "-"
        if count:
            try:
                n = len(task.examples("test"))
            except TaskDataError:
                n = "online" if task.online else "missing"
        rows.append([name, task.category, task.version, task.source, n, ", ".join(task.metrics), task_file(task)])
    return rows


def _main(args: argparse.Namespace) -> int:
    from tabulate import tabulate

    from tasks.base import CATEGORIES

    if args.category and args.category not in CATEGORIES:
        raise CLIError(f"unknown category {args.category!r}; allowed: {', '.join(CATEGORIES)}")
    rows = task_rows(args.category, count=not args.no_count)
    print(tabulate(rows, headers=["name", "category", "version", "source", "examples", "metrics", "file"]))
    print(
        f"\n{len(rows)} tasks. Online tasks read the hub; pass a local file with data_files=<task>=PATH to use them offline."
    )
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("tasks", help="list evaluation tasks (name, category, source, examples, metrics)")
    p.add_argument("--category", help="only this category (instruction, code, math, caption)")
    p.add_argument("--no-count", action="store_true", help="do not load data to count examples")
    p.set_defaults(func=_main)
