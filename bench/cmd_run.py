"""``distillm-bench run [SUITE.yaml|NAME] [key=value ...] [--plan] [--force STAGE]``: the benchmark."""

from __future__ import annotations

import argparse
import json
import sys

from tabulate import tabulate


def _main(args: argparse.Namespace) -> int:
    from bench.run import SuiteRun
    from bench.suite import SuiteConfig, load_suite

    if args.help_config:
        from distill.config import print_config_reference

        print_config_reference(SuiteConfig)
        return 0

    cfg = load_suite(args.config, args.overrides)
    if args.stand_in:
        from bench.stand_in import stand_in

        cfg = stand_in(cfg)
    run = SuiteRun(cfg)
    if args.plan:
        rows = run.plan(force=args.force)
        todo = sum(r["estimate_s"] for r in rows)
        print(f"suite {cfg.name} -> {run.run_dir} (suite hash {cfg.hash})")
        print(tabulate(rows, headers="keys", tablefmt="github"))
        n_cached = sum(r["status"] == "cached" for r in rows)
        print(f"{len(rows)} stages, {n_cached} cached; estimated time for the rest: {todo / 60:.1f} min")
        return 0
    rows = run.plan(force=args.force)
    done = sum(r["status"] == "cached" for r in rows)
    if done:  # a rerun (or stages another run computed) says what it reuses
        print(f"{done} of {len(rows)} stages already done (reused from {run.run_dir.parent / 'stages'}); "
              f"running the other {len(rows) - done}", file=sys.stderr)  # fmt: skip
    summary = run.run(force=args.force, until=args.until, wait=args.wait)
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
    headline = _headline(run.run_dir / "leaderboard.json")
    if headline:
        print(f"\n{headline}")
    return 0


def _headline(path) -> str:
    """Task average and gap recovered per row of the leaderboard just written (the full table is in the md)."""
    from pathlib import Path

    path = Path(path)
    if not path.is_file():
        return ""
    lb = json.loads(path.read_text())

    def cell(row: dict, key: str) -> str:
        c = row["cells"].get(key) or {}
        if c.get("mean") is None:
            return "–"
        return f"{c['mean']:.3f}" + (f" ± {c['ci95']:.3f}" if c.get("ci95") is not None else "")

    rows = [[r["label"], len(r["seeds"]), cell(r, "average"), cell(r, "gap_recovered")] for r in lb["rows"]]
    table = tabulate(rows, headers=["model", "n", "Avg. (95% CI)", "Gap rec."], tablefmt="github")
    return f"{table}\n(every column: {path.with_suffix('.md')})"


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("run", help="run a benchmark suite end to end (default: world, the controlled world)")
    p.add_argument("config", nargs="?", help="suite YAML or shipped name (world, smollm2, smoke, paper-...)")
    p.add_argument("overrides", nargs="*", help="key=value overrides, e.g. seeds=[0] train.token_budget=4000")
    p.add_argument("--plan", action="store_true", help="print the stages, cache hits and estimated time; run nothing")
    p.add_argument("--force", action="append", default=[], metavar="STAGE", help="redo a stage (or all 'train'...)")
    p.add_argument("--until", metavar="STAGE", help="stop after this stage (e.g. teacher); no tables are written")
    p.add_argument("--wait", action="store_true", help="wait for another run on the same directory to finish")
    p.add_argument("--stand-in", action="store_true",
                   help="rehearse the suite on a CPU: tiny models of its architectures, fixture data, a few steps")  # fmt: skip
    p.add_argument("--help-config", action="store_true", help="list every config key (type, default, help) and exit")
    p.set_defaults(func=_main)
