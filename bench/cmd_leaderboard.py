"""``distillm-bench leaderboard RUN_DIR... [--format md|latex|csv|json] [--table leaderboard|cost|paired|separation] [--out DIR]``.

Re-renders the leaderboard (or the cost table, the paired comparisons with SFT and KD, the pairwise separation
matrix) from the records of one or more run dirs alone and prints it. With ``--out DIR`` it also writes every table
(leaderboard md, tex, csv, json; cost md, tex, csv; paired md, csv, json; separation md) and the plots into DIR.
Records that disagree on schema, suite config or task versions are refused (one line, exit 2).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from bench.errors import CLIError


def _main(args: argparse.Namespace) -> int:
    from bench.leaderboard import RecordError, build_cost_table, build_leaderboard, load_records
    from bench.render import render, render_cost

    try:
        records = load_records([Path(d) for d in args.run_dirs])
        if args.table == "cost":
            text = render_cost(build_cost_table(records), args.format)
        elif args.table == "paired":
            from bench.separation import PAIRED_FORMATS, build_paired, render_paired

            if args.format not in PAIRED_FORMATS:
                raise CLIError(f"--table paired is rendered as {', '.join(PAIRED_FORMATS)} only")
            text = render_paired(build_paired(build_leaderboard(records)), args.format)
        elif args.table == "separation":
            from bench.separation import render_md

            if args.format != "md":
                raise CLIError("--table separation is rendered as md only")
            text = render_md(build_leaderboard(records))
        else:
            text = render(build_leaderboard(records), args.format)
    except RecordError as err:
        raise CLIError(str(err)) from err
    print(text, end="")
    if args.out:
        from bench.plots import write_plots
        from bench.tables import write_all

        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        written = write_all(out, records) + write_plots(out, records)
        print(f"wrote {len(written)} files to {out}: {', '.join(p.name for p in written)}", file=sys.stderr)
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("leaderboard", help="re-render the leaderboard and cost table from run records")
    p.add_argument("run_dirs", nargs="+", metavar="RUN_DIR", help="results/<run-id> directories (with records/)")
    p.add_argument("--format", choices=["md", "latex", "csv", "json"], default="md", help="printed format (md)")
    p.add_argument(
        "--table",
        choices=["leaderboard", "cost", "paired", "separation"],
        default="leaderboard",
        help="which table to print (paired: every method vs SFT and KD on shared seeds, md/csv/json; "
        "separation: pairwise differences on the headline metric, md)",
    )
    p.add_argument("--out", metavar="DIR", help="also write all tables and plots into DIR")
    p.set_defaults(func=_main)
