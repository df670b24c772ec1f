"""``distillm-bench gc [--root results] [--dry-run]``: remove the stored stages that no run directory refers to."""

from __future__ import annotations

import argparse
from pathlib import Path

from bench.errors import CLIError


def _main(args: argparse.Namespace) -> int:
    from bench.store import STORE_NAME, gc

    root = Path(args.root)
    if not root.is_dir():
        raise CLIError(f"gc: {root} is not a directory")
    removed, freed = gc(root, dry_run=args.dry_run)
    verb = "would remove" if args.dry_run else "removed"
    for entry in removed:
        print(f"{verb} {entry}")
    print(f"{verb} {len(removed)} stage(s) under {root / STORE_NAME} ({freed / 2**20:.1f} MiB)")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("gc", help="remove stored stages that no run directory refers to (bench/store.py)")
    p.add_argument("--root", default="results", help="the suites' output_root (default: results)")
    p.add_argument("--dry-run", action="store_true", help="list what would be removed, remove nothing")
    p.set_defaults(func=_main)
