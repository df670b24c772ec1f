"""``distillm-bench run [SUITE.yaml|NAME] [key=value ...] [--plan] [--force STAGE]``: the benchmark."""

from __future__ import annotations

import argparse
import json

from tabulate import tabulate


def _main(args: argparse.Namespace) -> int:
    from bench.run import SuiteRun
    from bench.suite import load_suite

    cfg = load_suite(args.config, args.overrides)
    run = SuiteRun(cfg)
    if args.plan:
        rows = run.plan()
        todo = sum(r["estimate_s"] for r in rows)
        print(f"suite {cfg.name} -> {run.run_dir} (suite hash {cfg.hash})")
        print(tabulate(rows, headers="keys", tablefmt="github"))
        n_cached = sum(r["status"] == "cached" for r in rows)
        print(f"{len(rows)} stages, {n_cached} cached; estimated time for the rest: {todo / 60:.1f} min")
        return 0
    summary = run.run(force=args.force, until=args.until)
    if args.until:
        print(f"stopped after stage {args.until} (ran: {', '.join(summary['ran']) or 'nothing'}) in {run.run_dir}")
        return 0
    shown = {k: v for k, v in summary.items() if k != "outputs"}
    shown["threads"] = {k: v for k, v in summary["threads"].items() if k != "stages"}
    print(json.dumps(shown, indent=2))
    print(f"\nwrote under {summary['run_dir']}/:")
    for path in summary["outputs"]:
        print(f"  {path}")
    print(f"  records/ ({summary['records']} records), stages/ (per-stage outputs), suite.yaml")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("run", help="run a benchmark suite end to end (default: world, the controlled world)")
    p.add_argument("config", nargs="?", help="suite YAML or shipped name (world, smollm2, smoke, paper-...)")
    p.add_argument("overrides", nargs="*", help="key=value overrides, e.g. seeds=[0] train.token_budget=4000")
    p.add_argument("--plan", action="store_true", help="print the stages, cache hits and estimated time; run nothing")
    p.add_argument("--force", action="append", default=[], metavar="STAGE", help="redo a stage (or all 'train'...)")
    p.add_argument("--until", metavar="STAGE", help="stop after this stage (e.g. teacher); no tables are written")
    p.set_defaults(func=_main)
