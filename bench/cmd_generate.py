"""``distillm-bench generate [CONFIG.yaml] [key=value ...]``: completions from any model source.

Writes ``<output_dir>/config.yaml`` (the resolved config) and ``<output_dir>/completions.jsonl``
(one row per prompt and sample: prompt, sample index, text, token count, finish reason).
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from distill.atomic import atomic_write_jsonl
from distill.config import load_config, require, save_config
from distill.generation import SamplingParams
from distill.models import ModelConfig

DEMO_PROMPTS = [
    "What is the capital of France?",
    "Write a Python function that returns the square of a number.",
    "Give three tips for staying healthy.",
    "What is 12 + 30?",
]


@dataclass
class GenerateConfig:
    model: ModelConfig = field(default_factory=lambda: ModelConfig(name="smollm2-135m-instruct", dtype="bfloat16"))
    backend: Literal["hf", "vllm"] = "hf"
    batch_size: int = field(default=16, metadata={"help": "prompts per generate call (hf)", "min": 1})
    chat: bool = field(default=True, metadata={"help": "apply the tokenizer's chat template to string prompts"})
    prompts: list[str] = field(default_factory=lambda: list(DEMO_PROMPTS))
    prompts_file: str | None = field(default=None, metadata={"help": "a .txt (one per line) or .jsonl ('prompt')"})
    sampling: SamplingParams = field(default_factory=lambda: SamplingParams(max_new_tokens=64))
    output_dir: str = "results/generate"

    def __post_init__(self) -> None:
        require(self.prompts_file is not None or bool(self.prompts), "no prompts: set prompts or prompts_file")


def read_prompts(path: str) -> list[str]:
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"prompts file not found: {p}")
    if p.suffix == ".jsonl":
        rows = [json.loads(line) for line in p.read_text().splitlines() if line.strip()]
        missing = [i for i, r in enumerate(rows) if "prompt" not in r]
        if missing:
            raise ValueError(f"{p}: row {missing[0] + 1} has no 'prompt' field")
        prompts = [r["prompt"] for r in rows]
    else:
        prompts = [line for line in p.read_text().splitlines() if line.strip()]
    if not prompts:
        raise ValueError(f"prompts file is empty: {p}")
    return prompts


def run_generate(cfg: GenerateConfig) -> Path:
    from distill.engines import make_generator
    from distill.models import load_for_inference, resolve_source

    out = Path(cfg.output_dir)
    save_config(cfg, out / "config.yaml")
    prompts = read_prompts(cfg.prompts_file) if cfg.prompts_file else cfg.prompts
    t0 = time.perf_counter()
    if cfg.backend == "vllm":
        from transformers import AutoTokenizer

        if cfg.model.is_derived:
            raise ValueError("backend=vllm needs a saved model directory; save the pruned/quantised student first")
        src = resolve_source(cfg.model.name, cfg.model.cache_dir)
        tok = AutoTokenizer.from_pretrained(src)
        gen = make_generator("vllm", None, tok, model_dir=src, chat=cfg.chat, dtype=cfg.model.dtype)
    else:
        model, tok = load_for_inference(cfg.model)
        gen = make_generator("hf", model, tok, batch_size=cfg.batch_size, chat=cfg.chat)
    t_load = time.perf_counter() - t0
    results = gen.generate(prompts, cfg.sampling)
    t_gen = time.perf_counter() - t0 - t_load
    rows = [
        {"prompt": p, "sample": j, "text": c.text, "tokens": len(c.token_ids), "finish_reason": c.finish_reason}
        for p, comps in zip(prompts, results, strict=True)
        for j, c in enumerate(comps)
    ]
    atomic_write_jsonl(out / "completions.jsonl", rows)
    n_tok = sum(r["tokens"] for r in rows)
    for r in rows[: min(len(rows), 8)]:
        print(f"> {r['prompt']}\n  {r['text'].strip()[:200]!r}")
    print(
        f"\n{len(rows)} completions ({n_tok} new tokens, {n_tok / max(t_gen, 1e-9):.0f} tok/s; "
        f"load {t_load:.1f} s, generate {t_gen:.1f} s)\nwrote {out / 'completions.jsonl'} and {out / 'config.yaml'}"
    )
    return out


def _main(args: argparse.Namespace) -> int:
    cfg = load_config(GenerateConfig, args.config, args.overrides)
    run_generate(cfg)
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("generate", help="generate completions with any model source (hf or vllm backend)")
    p.add_argument("config", nargs="?", help="YAML config (GenerateConfig); optional")
    p.add_argument("overrides", nargs="*", help="key=value overrides, e.g. model.name=tiny-llama sampling.n=2")
    p.set_defaults(func=_main)
