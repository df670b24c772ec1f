"""``distillm-bench sweep [SUITE] --lr 1e-3,3e-3 [key=value ...]``: per-method LR selection on the val split."""

from __future__ import annotations

import argparse


def _grid(text: str) -> list[float]:
    try:
        return [float(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a comma-separated list of numbers: {text!r}") from None


def _main(args: argparse.Namespace) -> int:
    from bench.suite import load_suite
    from bench.sweep import run_sweep

    cfg = load_suite(args.config, args.overrides)
    result = run_sweep(cfg, args.lr)
    for method, lr in result["chosen"].items():
        print(f"{method}: lr {lr:g}")
    print(f"\nwrote {', '.join(result['outputs'])} (stages under {result['run_dir']}/)")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "sweep",
        help="pick each method's learning rate from a grid by its val-split score (the test split is never read)",
    )
    p.add_argument("config", nargs="?", help="suite YAML or shipped name (default: world)")
    p.add_argument("overrides", nargs="*", help="key=value suite overrides, e.g. methods=[sft,kd]")
    p.add_argument(
        "--lr", type=_grid, required=True, metavar="LR,LR,...", help="the learning-rate grid, e.g. 1e-3,3e-3"
    )
    p.set_defaults(func=_main)
