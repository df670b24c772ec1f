"""``distillm-bench models {prepare,info}``: convert/cache model sources and inspect them."""

from __future__ import annotations

import argparse
import time

from distill.config import load_config
from distill.models import ModelConfig, count_params, load_from_config, resolve_source


def _prepare(args: argparse.Namespace) -> int:
    for name in args.names:
        t0 = time.perf_counter()
        path = resolve_source(name, args.cache_dir)
        print(f"{name}: {path} ({time.perf_counter() - t0:.1f} s)")
    return 0


def _info(args: argparse.Namespace) -> int:
    cfg = load_config(ModelConfig, None, [f"name={args.name}", *args.overrides])
    t0 = time.perf_counter()
    model, tok = load_from_config(cfg)
    c = model.config
    print(
        f"{cfg.name}{' (pruned)' if cfg.is_pruned else ''}: {type(model).__name__}, {count_params(model) / 1e6:.2f}M params, "
        f"{c.num_hidden_layers} layers, hidden {c.hidden_size}, mlp {c.intermediate_size}, "
        f"tokenizer {len(tok)} tokens, head rows {model.get_output_embeddings().weight.shape[0]}, "
        f"dtype {next(model.parameters()).dtype}, chat template {'yes' if tok.chat_template else 'no'} "
        f"(loaded in {time.perf_counter() - t0:.1f} s)"
    )
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("models", help="prepare (download/convert/cache) and inspect model sources")
    msub = p.add_subparsers(dest="models_command", metavar="ACTION")
    msub.required = True
    prep = msub.add_parser("prepare", help="resolve and cache model sources (e.g. dequantize the SmolLM2 GGUF)")
    prep.add_argument("names", nargs="+")
    prep.add_argument("--cache-dir", default=None)
    prep.set_defaults(func=_prepare)
    info = msub.add_parser("info", help="load a model source (optionally pruned) and print its shape")
    info.add_argument("name")
    info.add_argument("overrides", nargs="*", help="ModelConfig keys, e.g. prune_layers=8 dtype=bfloat16")
    info.set_defaults(func=_info)
