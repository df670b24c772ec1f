"""lm-eval as the generation-and-scoring engine for registry tasks.

Each registry task becomes an lm-eval ``generate_until`` task config (a plain dict, no YAML, no Jinja): the
prompts are rendered here in Python (chat template or plain) and written with the example ids to a JSONL file at
run time (``dataset_path: json`` + absolute ``data_files``); ``doc_to_text`` returns the stored prompt and
``process_results`` calls the task's own scorer, so lm-eval's mean over docs is the task metric (pass@k is
averaged per problem, which is exactly the unbiased estimator's mean). ``TaskManager(include_defaults=False)``
keeps lm-eval from indexing its ~14k built-in YAMLs; a built-in task named ``lm_eval:<name>`` (online only)
gets a default TaskManager instead.

Backends: ``hf`` wraps an in-process model in ``HFLM`` (CPU here, CUDA when available); ``vllm`` uses lm-eval's
vLLM backend on the model's local directory (GPU; ``no_repeat_ngram_size`` is not supported there and is dropped
with a warning).
"""

from __future__ import annotations

import json
import logging
import os
import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from distill.atomic import atomic_write_jsonl
from tasks.base import Example, GenerationSpec, Task

log = logging.getLogger(__name__)


@dataclass
class TaskRun:
    """One registry task prepared for lm-eval: its config and the sink its scorer writes sample rows into."""

    task: Task
    examples: list[Example]
    spec: GenerationSpec
    config: dict[str, Any]
    samples: list[dict[str, Any]] = field(default_factory=list)
    #: example id -> (completions, scores), filled by the batched pre-scoring filter step
    prescored: dict[str, tuple[list[str], list[Any]]] = field(default_factory=dict)


class _Prescore:
    """An lm-eval filter step (last in the pipeline, it passes responses through unchanged) that scores every
    document's completions in one :meth:`Task.score_batch` call. lm-eval then calls ``process_results`` once per
    document; it reads these scores instead of scoring one document at a time. For code tasks this replaces one
    sandboxed process per document with a few in parallel (world-code: ~25 ms per process on this CPU)."""

    def __init__(self, run: TaskRun) -> None:
        self.run = run

    def apply(self, resps, docs):
        resps = [list(r) for r in resps]
        by_id = {ex.id: ex for ex in self.run.examples}
        examples = [by_id[d["example_id"]] for d in docs]
        completions = [[str(c) for c in r] for r in resps]
        scores = self.run.task.score_batch(examples, completions)
        for ex, comps, sc in zip(examples, completions, scores, strict=True):
            self.run.prescored[ex.id] = (comps, sc)
        return resps


def uses_chat(tokenizer: Any, mode: str) -> bool:
    """Whether prompts are rendered with the tokenizer's chat template (``auto``: when it has one)."""
    has = bool(getattr(tokenizer, "chat_template", None))
    if mode == "on" and not has:
        raise ValueError("chat=on but the model's tokenizer has no chat template; use chat=auto or chat=off")
    return has and mode != "off"


def render(task: Task, example: Example, tokenizer: Any, chat: bool) -> str:
    """The exact text the model is given for ``example``."""
    if chat:
        return tokenizer.apply_chat_template(task.prompt(example), tokenize=False, add_generation_prompt=True)
    return task.plain_prompt(example)


def generation_kwargs(spec: GenerationSpec, chat: bool, backend: str) -> dict[str, Any]:
    """lm-eval ``generation_kwargs`` for a spec (stop words, greedy or sampling, max tokens)."""
    until = list(spec.stop) + ([] if chat else list(spec.plain_stop))
    kwargs: dict[str, Any] = {"until": until, "max_gen_toks": spec.max_new_tokens, "do_sample": spec.temperature > 0}
    if spec.temperature > 0:
        kwargs.update(temperature=spec.temperature, top_p=spec.top_p)
        if spec.top_k > 0:
            kwargs["top_k"] = spec.top_k
    else:
        kwargs["temperature"] = 0.0
    if spec.no_repeat_ngram_size:
        if backend == "hf":
            kwargs["no_repeat_ngram_size"] = spec.no_repeat_ngram_size
        else:
            log.warning("no_repeat_ngram_size is not supported by the %s backend; dropped", backend)
    return kwargs


def build_task_run(
    task: Task,
    examples: list[Example],
    spec: GenerationSpec,
    tokenizer: Any,
    chat: bool,
    backend: str,
    work_dir: Path,
    config_name: str,
) -> TaskRun:
    """Materialise the prompts to ``work_dir/<config_name>.jsonl`` and build the lm-eval dict config."""
    rows = [
        {"doc_index": i, "example_id": ex.id, "prompt": render(task, ex, tokenizer, chat)}
        for i, ex in enumerate(examples)
    ]
    data_path = (work_dir / f"{config_name}.jsonl").resolve()
    atomic_write_jsonl(data_path, rows)
    run = TaskRun(task=task, examples=examples, spec=spec, config={})
    run.config = {
        "task": config_name,
        "dataset_path": "json",
        # datasets' Arrow cache stays inside the run directory (no global cache writes).
        "dataset_kwargs": {"data_files": {"test": str(data_path)}, "cache_dir": str(work_dir.resolve() / "hf_cache")},
        "test_split": "test",
        "output_type": "generate_until",
        "doc_to_text": _doc_prompt,
        "doc_to_target": _empty_target,
        "target_delimiter": "",
        "generation_kwargs": generation_kwargs(spec, chat, backend),
        "repeats": spec.n,
        "filter_list": [
            {
                "name": "all",
                # a factory closure, not the run itself: lm-eval deep-copies and asdict()s its task configs
                "filter": [{"function": "take_first_k", "k": spec.n}, {"function": lambda: _Prescore(run)}],
            }
        ],
        "process_results": _scorer(run),
        "metric_list": [
            {"metric": m, "aggregation": "mean", "higher_is_better": m not in task.lower_is_better}
            for m in _metric_names(task, spec)
        ],
        "metadata": {"version": float(task.version)},
    }
    return run


def _doc_prompt(doc: dict[str, Any]) -> str:
    return doc["prompt"]


def _empty_target(doc: dict[str, Any]) -> str:
    return ""


def _metric_names(task: Task, spec: GenerationSpec) -> list[str]:
    if task.category == "code":
        ks = [k for k in getattr(task, "ks", (1,)) if k <= spec.n] or [1]
        return [f"pass@{k}" for k in ks]
    return list(task.metrics)


def _scorer(run: TaskRun) -> Callable[[dict[str, Any], list[Any]], dict[str, float]]:
    by_id = {ex.id: ex for ex in run.examples}

    def process_results(doc: dict[str, Any], results: list[Any]) -> dict[str, float]:
        completions = [str(r) for r in (results[0] if results and isinstance(results[0], list) else results)]
        example = by_id[doc["example_id"]]
        cached = run.prescored.get(example.id)
        scores = cached[1] if cached and cached[0] == completions else run.task.score_many(example, completions)
        metrics = run.task.aggregate([scores])
        for i, (completion, score) in enumerate(zip(completions, scores, strict=True)):
            run.samples.append(
                {
                    "task": run.task.name,
                    "example_id": example.id,
                    "sample": i,
                    "prompt": doc["prompt"],
                    "completion": completion,
                    "score": score.value,
                    "metrics": score.metrics,
                    "extracted": score.extracted,
                    "detail": score.detail,
                    "target": example.target,
                }
            )
        return {name: float(metrics.get(name, 0.0)) for name in _metric_names(run.task, run.spec)}

    return process_results


def make_lm(backend: str, model_name: str, *, dtype: str, batch_size: int, max_length: int, cache_dir: str | None):
    """``(lm, tokenizer)``: HFLM over an in-process model, or lm-eval's vLLM backend on the model directory."""
    if backend == "hf":
        from lm_eval.models.huggingface import HFLM

        from distill.models import inference_device, load_model

        model, tokenizer = load_model(model_name, dtype=dtype, cache_dir=cache_dir)
        device = inference_device()
        model.to(device)
        lm = HFLM(
            pretrained=model, tokenizer=tokenizer, device=str(device), batch_size=batch_size, max_length=max_length
        )
        return lm, tokenizer
    if backend == "vllm":
        from lm_eval.models.vllm_causallms import VLLM
        from transformers import AutoTokenizer

        from distill.models import resolve_source

        path = resolve_source(model_name, cache_dir)
        tokenizer = AutoTokenizer.from_pretrained(path)
        from distill.models import resolve_dtype

        lm = VLLM(pretrained=path, dtype=resolve_dtype(dtype), batch_size="auto", max_model_len=max_length, seed=0)
        return lm, tokenizer
    raise ValueError(f"unknown backend {backend!r}; allowed: hf, vllm")


def evaluate(
    lm: Any,
    runs: Sequence[TaskRun],
    builtin: Sequence[str] = (),
    *,
    seed: int = 0,
    limit: int | None = None,
) -> dict[str, Any]:
    """One ``simple_evaluate`` call over prepared registry tasks (+ built-in lm-eval task names, online only).

    Returns ``{"results": {task: {metric: value}}, "samples": {task: [lm-eval sample logs]}, "lm_eval": {...}}``.
    """
    import lm_eval
    import lm_eval.evaluator
    from lm_eval.tasks import TaskManager

    # lm-eval runs `git describe` and lets git print "fatal: not a git repository" outside a checkout
    lm_eval.evaluator.get_git_commit_hash = _quiet_git_hash
    specs: list[Any] = [r.config for r in runs]
    if builtin:
        manager = TaskManager()  # built-in tasks need the full index (and the hub)
        specs += list(builtin)
    else:
        manager = TaskManager(include_defaults=False)
    out = lm_eval.simple_evaluate(
        model=lm,
        tasks=specs,
        task_manager=manager,
        log_samples=True,
        bootstrap_iters=0,
        random_seed=seed,
        numpy_random_seed=seed,
        torch_random_seed=seed,
        fewshot_random_seed=seed,
        limit=limit,
    )
    if out is None:
        raise RuntimeError("lm_eval.simple_evaluate returned nothing (non-zero rank?)")
    results = {}
    for name, values in out["results"].items():
        results[name] = {
            key.split(",")[0]: value
            for key, value in values.items()
            if "," in key and "_stderr" not in key and isinstance(value, (int, float))
        }
    meta = {k: out.get(k) for k in ("versions", "n-samples", "lm_eval_version", "transformers_version", "git_hash")}
    return {
        "results": results,
        "samples": out.get("samples", {}),
        "lm_eval": json.loads(json.dumps(meta, default=str)),
    }


def seed_summary(per_seed: Sequence[dict[str, float]]) -> dict[str, float]:
    """Mean and sample std over seeds for every metric (std is 0 for a single seed)."""
    out: dict[str, float] = {}
    for metric in per_seed[0] if per_seed else {}:
        values = [r[metric] for r in per_seed if metric in r]
        out[metric] = statistics.fmean(values)
        out[f"{metric}_std"] = statistics.stdev(values) if len(values) > 1 else 0.0
    return out


def with_overrides(spec: GenerationSpec, **changes: Any) -> GenerationSpec:
    """``spec`` with the non-None ``changes`` applied."""
    return replace(spec, **{k: v for k, v in changes.items() if v is not None})


def quiet_lm_eval() -> None:
    """lm-eval logs a few harmless warnings per task for in-process models; keep them out of the CLI output."""
    for name in ("lm_eval", "lm-eval", "lm_eval.api.task", "lm_eval.models.huggingface", "lm_eval.evaluator"):
        logging.getLogger(name).setLevel(logging.ERROR)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    import datasets

    datasets.disable_progress_bars()


def _quiet_git_hash() -> str | None:
    """lm-eval's ``get_git_commit_hash`` without git's stderr (the record's own provenance holds the commit)."""
    import subprocess

    try:
        out = subprocess.run(["git", "describe", "--always"], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None
