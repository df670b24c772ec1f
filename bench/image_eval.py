"""The eval engine's path for image tasks (``Task.needs_image``: ``world-caption``, ``world-vqa``, ...).

lm-eval's multimodal model (``hf-multimodal``) was not used: it would need our in-process LLaVA and its processor
to be loaded by lm-eval's own loader, and its ``generate_until`` batching of images and chat templates to match
the trainer's; the project's path below feeds exactly the prompts and pixels the trainer uses. Each image is
written to the run's work dir, its prompt is encoded as an image row (``distill/vision.py``), the model generates
with :class:`distill.generation.HFGenerator` under the task's decoding, and the task scores every completion at
once (``score_batch``) and aggregates over the whole set, so corpus metrics (CIDEr-D, corpus BLEU-4) are computed
over the set, not per example. The results and samples have the same format as the lm-eval path's.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from bench.lmeval import uses_chat
from tasks.base import Example, GenerationSpec, Task


def _image_file(task: Task, example: Example, work_dir: Path) -> str:
    path = work_dir / "images" / task.name / f"{example.id.replace('/', '_')}.png"
    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        task.image(example).save(path)
    return str(path)


def load_image_model(cfg) -> tuple[Any, Any, bool]:
    """``(model, tokenizer, chat)`` of a vision-language model for image tasks (refused for a text model)."""
    from distill.models import inference_device, load_model
    from distill.vision import images_of

    model, tok = load_model(cfg.model, dtype=cfg.dtype, cache_dir=cfg.cache_dir)
    if images_of(tok) is None:
        raise ValueError(f"model {cfg.model!r} is text-only; image tasks need a vision-language model")
    return model.to(inference_device()).eval(), tok, uses_chat(tok, cfg.chat)


def run_image_tasks(cfg, tasks: list[Task], examples, specs, seeds, work_dir: Path):
    """Every image task for every seed (greedy tasks: the first seed only), in the eval engine's layout:
    ``(per_seed, samples, metadata, chat)``."""
    model, tok, chat = load_image_model(cfg)
    per_seed: dict[str, list[dict[str, Any]]] = {}
    samples: dict[str, list[dict[str, Any]]] = {}
    for i, seed in enumerate(seeds):
        for t in [t for t in tasks if i == 0 or specs[t.name].temperature > 0]:
            metrics, rows = run_image_task(model, tok, chat, t, examples[t.name], specs[t.name], seed, cfg, work_dir)
            per_seed.setdefault(t.name, []).append({"seed": seed, **metrics})
            samples.setdefault(t.name, []).extend({"seed": seed, **row} for row in rows)
    return per_seed, samples, {"path": "bench/image_eval.py (the project's image path; lm-eval not used)"}, chat


def run_image_task(
    model, tok, chat: bool, task: Task, examples: list[Example], spec: GenerationSpec, seed: int, cfg, work_dir: Path
) -> tuple[dict[str, float], list[dict[str, Any]]]:
    """Generate and score one image task for one seed: ``(metrics, sample rows)``."""
    from distill.data import encode_prompt
    from distill.generation import HFGenerator, SamplingParams, render_prompt

    prompts, texts = [], []
    for ex in examples:
        prompt = task.prompt(ex) if chat else task.plain_prompt(ex)
        prompts.append(encode_prompt(tok, prompt, cfg.max_length, chat, _image_file(task, ex, work_dir)))
        texts.append(render_prompt(tok, prompt, chat)[0])
    stop = list(spec.stop) + ([] if chat else list(spec.plain_stop))
    sampling = SamplingParams(temperature=spec.temperature, top_p=spec.top_p, top_k=spec.top_k,
                              max_new_tokens=spec.max_new_tokens, stop=stop, seed=seed, n=spec.n,
                              no_repeat_ngram_size=spec.no_repeat_ngram_size)  # fmt: skip
    outs = HFGenerator(model, tok, batch_size=cfg.batch_size, chat=chat).generate_ids(prompts, sampling)
    completions = [[c.text for c in out] for out in outs]
    scores = task.score_batch(examples, completions)
    rows = [
        {
            "task": task.name,
            "example_id": ex.id,
            "sample": i,
            "prompt": text,
            "completion": comp,
            "score": s.value,
            "metrics": s.metrics,
            "extracted": s.extracted,
            "detail": s.detail,
            "target": ex.target,
        }  # fmt: skip
        for ex, text, comps, sc in zip(examples, texts, completions, scores, strict=True)
        for i, (comp, s) in enumerate(zip(comps, sc, strict=True))
    ]
    return task.aggregate(scores), rows
