"""The `distillm-bench` console script.

Each subcommand lives in its own module, which exposes ``register(subparsers)``; that function adds its
parser and sets ``func`` (called with the parsed namespace, returns an exit code). Modules are imported
lazily by name so that ``distillm-bench --help`` stays fast and a broken optional command cannot hide the others.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys

from bench.errors import CLIError

# One line per subcommand module. Adding a command = one module + one line here.
COMMAND_MODULES = [
    "bench.cmd_generate",  # generate: completions from any model source (HF or vLLM backend)
    "bench.cmd_models",  # models: prepare/inspect model sources (GGUF cache, pruned students)
    "bench.loss_bench",  # bench losses: memory/time of the distillation losses (naive, chunked, top-k)
    "bench.cmd_train",  # train: one student, one method (distill/train.py)
    "bench.cmd_run",  # run: a benchmark suite end to end (bench/run.py)
    "bench.cmd_sweep",  # sweep: per-method learning rates chosen on the val split (bench/sweep.py)
    "bench.cmd_gc",  # gc: remove stored stages no run directory refers to (bench/store.py)
    "bench.cmd_tasks",  # tasks: list the evaluation task registry
    "bench.cmd_registry",  # methods, losses: list the method and loss registries
    "bench.cmd_eval",  # eval: score a model on registry tasks through lm-eval
    "bench.cmd_score",  # score: score samples generated elsewhere (score humaneval)
    "bench.cmd_leaderboard",  # leaderboard: re-render tables and plots from run records
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="distillm-bench",
        description="LLM knowledge-distillation benchmark: train (DistiLLM, DistiLLM-2, baselines), evaluate, tabulate.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(sub)
    return parser


def split_config_args(config: str | None, overrides: list[str]) -> tuple[str | None, list[str]]:
    """``cmd [CONFIG.yaml] [key=value ...]``: a first positional with '=' and no YAML suffix is an override."""
    if config is not None and "=" in config and not config.endswith((".yaml", ".yml")):
        return None, [config, *overrides]
    return config, list(overrides)


def _user_errors() -> tuple[type[BaseException], ...]:
    from safetensors import SafetensorError

    from distill.train import TrainingError

    # OSError: FileNotFoundError, PermissionError, ENOSPC ...; SafetensorError: safetensors' own write failures
    return (CLIError, ValueError, OSError, TrainingError, SafetensorError)


def main(argv: list[str] | None = None) -> int:
    if not sys.stderr.isatty():  # a log file: progress bars redraw at most every 30 s, not many times a second
        os.environ.setdefault("TQDM_MININTERVAL", "30")
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    # key=value overrides may also follow an --option (argparse stops filling a positional list at options)
    if extra and hasattr(args, "overrides") and all("=" in e and not e.startswith("-") for e in extra):
        args.overrides = [*args.overrides, *extra]
    elif extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    if hasattr(args, "config") and hasattr(args, "overrides"):
        args.config, args.overrides = split_config_args(args.config, args.overrides)
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt as err:
        if str(err):  # the trainer says where it stopped and where a rerun resumes
            print(f"distillm-bench {args.command}: {err}", file=sys.stderr)
            return 130
        again = {
            "train": "; rerun the same command with resume=auto to continue from its last checkpoint",
            "run": "; rerun the same command to continue: finished stages are kept",
        }.get(args.command, "")
        print(f"distillm-bench {args.command}: interrupted{again}", file=sys.stderr)
        return 130
    except Exception as err:
        if not isinstance(err, _user_errors()):
            raise
        # Bad input (config typo, missing file, tokenizer mismatch, empty data ...) and the environment (a read-only
        # or full disk, a path that is a file) are one line, exit 2. ConfigError, ModelSourceError and
        # TokenizerMismatchError are ValueErrors.
        if os.environ.get("DISTILLM_DEBUG"):
            raise
        print(f"distillm-bench {args.command}: error: {_one_line(err)}", file=sys.stderr)
        return 2


def _one_line(err: BaseException) -> str:
    """The first line of an error; an OS error as its reason and path (``Read-only file system: results/x``)."""
    if isinstance(err, OSError) and err.errno is not None and err.strerror:  # raised by the OS, not by us
        path = err.filename2 or err.filename  # a failed rename: the destination, not the temp file
        return f"{err.strerror}: {path}" if path else err.strerror
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


if __name__ == "__main__":
    sys.exit(main())
