"""``distillm-bench train CONFIG.yaml [key=value ...]``: train one student with one method."""

from __future__ import annotations

import argparse
import json

from distill.config import load_config


def _main(args: argparse.Namespace) -> int:
    from distill.train import TrainConfig, train

    if args.help_config:
        from distill.config import print_config_reference

        print_config_reference(TrainConfig)
        return 0

    cfg = load_config(TrainConfig, args.config, args.overrides)
    summary = train(cfg)
    print(json.dumps(summary, indent=2))
    print(
        f"wrote {cfg.output_dir}/config.yaml, metrics.jsonl, checkpoints/, final/ (student, safetensors), summary.json"
    )
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    from distill.methods import METHODS

    p = sub.add_parser("train", help=f"train a student ({', '.join(METHODS)})")
    p.add_argument("config", nargs="?", help="YAML config (TrainConfig)")
    p.add_argument("overrides", nargs="*", help="key=value overrides, e.g. method=distillm2 optim.lr=1e-4")
    p.add_argument("--help-config", action="store_true", help="list every config key (type, default, help) and exit")
    p.set_defaults(func=_main)
