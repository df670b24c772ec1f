"""``distillm-bench eval [CONFIG.yaml] --model M --tasks a,b [key=value ...]``: score a model on registry tasks.

Writes ``<output_dir>/<run_name>/record.json`` (scores + provenance) and ``samples/<task>.jsonl``. Keys are the
fields of :class:`bench.evaluate.EvalConfig` (e.g. ``limit=20 protocol=distillm backend=vllm``).
"""

from __future__ import annotations

import argparse


def _main(args: argparse.Namespace) -> int:
    from tabulate import tabulate

    from bench.errors import CLIError
    from bench.evaluate import EvalConfig, run_eval

    if args.help_config:
        from distill.config import print_config_reference

        print_config_reference(EvalConfig)
        return 0
    from distill.config import load_config
    from tasks.base import TaskDataError

    config = None
    overrides = []
    for item in args.args:
        if "=" not in item and item.endswith((".yaml", ".yml")) and config is None:
            config = item
        else:
            overrides.append(item)
    if args.model:
        overrides.append(f"model={args.model}")
    if args.tasks:
        overrides.append(f"tasks={args.tasks}")
    cfg = load_config(EvalConfig, config, overrides)
    try:
        record = run_eval(cfg)
    except TaskDataError as err:
        raise CLIError(str(err)) from None
    rows = []
    for key, metric in record.metrics.items():
        task, _, name = key.rpartition("/")
        entry = record.tasks.get(task)
        version, n = (entry.version, entry.n) if entry else ("-", "-")
        std = f"{metric.std:.4f}" if metric.std is not None else "-"
        value = "-" if metric.value is None else f"{metric.value:.4f}"
        rows.append([task, version, n, name, value, std])
    print(tabulate(rows, headers=["task", "version", "examples", "metric", "mean", "std over seeds"]))
    run = record.eval
    print(f"\nseeds {run['seeds']}, wall time {run['wall_time_s']:.1f} s\nwrote {run['run_dir']}/record.json")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("eval", help="evaluate a model on registry tasks through lm-eval (record JSON + samples)")
    p.add_argument("--model", help="model source (hub id, local dir, tiny-llama, smollm2-135m-instruct)")
    p.add_argument("--tasks", help="comma-separated task names (see `distillm-bench tasks`)")
    p.add_argument("args", nargs="*", help="optional CONFIG.yaml, then key=value overrides (EvalConfig fields)")
    p.add_argument("--help-config", action="store_true", help="list every config key (type, default, help) and exit")
    p.set_defaults(func=_main)
