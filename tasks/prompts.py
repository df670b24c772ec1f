"""Training prompt pools for distillation, decontaminated against every eval set.

Offline pools are the ``train`` splits of the procedural tasks (one per text category); the papers' online sets
(Dolly-15k, UltraChat-200k, MetaMathQA, Evol-Instruct-Code) are named here and read from the hub (or from a
local file with the same schema). Every pool is filtered by word n-gram overlap against the test split of every
registered task whose data is available: a prompt sharing any ``n``-gram (default 13, lowercased words) with an
eval prompt is dropped; a prompt shorter than ``n`` words is dropped when it equals an eval prompt.

Rows: ``{"id", "pool", "prompt": [messages], "text": str, "response": str | None}`` (``response``: the hub set's
reference answer, or for the controlled-world pools ``world-*`` the task's gold answer).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

from tasks import TASKS, get_task
from tasks.base import TaskDataError, user
from tasks.sources import hub_rows, read_rows, seeded_rng

DEFAULT_N = 13


@dataclass(frozen=True)
class PromptPool:
    name: str
    category: str
    source: str
    online: bool
    description: str


POOLS: dict[str, PromptPool] = {
    p.name: p
    for p in [
        PromptPool("ifeval-synth", "instruction", "task:ifeval-synth/train", False, "verifiable-instruction prompts"),
        PromptPool("string-ops", "instruction", "task:string-ops/train", False, "string transform instructions"),
        PromptPool("arith", "math", "task:arith/train", False, "two-operand arithmetic questions"),
        PromptPool("tiny-func", "code", "task:tiny-func/train", False, "one-line Python function stubs"),
        PromptPool("world-arith", "math", "task:world-arith/train", False, "world: one-digit +/- chains (traced)"),
        PromptPool("world-ifeval", "instruction", "task:world-ifeval/train", False, "world: verifiable instructions"),
        PromptPool("world-code", "code", "task:world-code/train", False, "world: one-line functions from a spec"),
        PromptPool("world-pick", "instruction", "task:world-pick/train", False, "world: pick any valid listed word"),
        PromptPool("world-vqa", "vqa", "task:world-vqa/train", False, "image world: questions about a scene"),
        PromptPool("world-caption", "caption", "task:world-caption/train", False, "image world: caption a scene"),
        PromptPool(
            "dolly-15k", "instruction", "hub:databricks/databricks-dolly-15k", True, "DistiLLM v1 training set"
        ),
        PromptPool(
            "ultrachat-200k", "instruction", "hub:HuggingFaceH4/ultrachat_200k", True, "DistiLLM-2 chat prompts"
        ),
        PromptPool("metamathqa", "math", "hub:meta-math/MetaMathQA", True, "DistiLLM-2 math prompts"),
        PromptPool(
            "evol-instruct-code", "code", "hub:nickrosh/Evol-Instruct-Code-80k-v1", True, "DistiLLM-2 code prompts"
        ),
        PromptPool("rlaif-v", "vqa", "hub:openbmb/RLAIF-V-Dataset", True, "DistiLLM-2 VLM prompts (with images)"),
    ]
}

# hub pool -> (dataset id, split, row -> (prompt text, response))
_HUB: dict[str, tuple[str, str, Callable[[dict[str, Any]], tuple[str, str | None]]]] = {
    "dolly-15k": (
        "databricks/databricks-dolly-15k",
        "train",
        lambda r: (r["instruction"] + (f"\n\n{r['context']}" if r.get("context") else ""), r.get("response")),
    ),
    "ultrachat-200k": ("HuggingFaceH4/ultrachat_200k", "train_sft", lambda r: (r["prompt"], None)),
    "metamathqa": ("meta-math/MetaMathQA", "train", lambda r: (r["query"], r.get("response"))),
    "evol-instruct-code": (
        "nickrosh/Evol-Instruct-Code-80k-v1",
        "train",
        lambda r: (r["instruction"], r.get("output")),
    ),
    # RLAIF-V: DistiLLM-2 distils on its questions (each with its image); the teacher answers, `chosen` is not used
    "rlaif-v": ("openbmb/RLAIF-V-Dataset", "train", lambda r: (r["question"], None)),
}


def words(text: str) -> list[str]:
    """Lowercased word tokens; arithmetic operators count as tokens ("3 + 4" and "3 - 4" differ)."""
    return re.findall(r"\w+|[+\-*/=<>^%]", text.lower())


def ngrams(text: str, n: int = DEFAULT_N) -> set[tuple[str, ...]]:
    """Word n-grams of ``text``; a text shorter than ``n`` words yields itself as one (shorter) gram."""
    w = words(text)
    if len(w) < n:
        return {tuple(w)} if w else set()
    return {tuple(w[i : i + n]) for i in range(len(w) - n + 1)}


@lru_cache(maxsize=8)
def eval_ngrams(n: int = DEFAULT_N, tasks: tuple[str, ...] | None = None) -> tuple[frozenset, tuple[str, ...]]:
    """n-grams of every available eval prompt; also returns the names of tasks whose data was unavailable."""
    grams: set[tuple[str, ...]] = set()
    skipped = []
    for name in tasks or tuple(sorted(TASKS)):
        task = get_task(name)
        try:
            examples = task.examples("test")
        except (TaskDataError, ConnectionError, OSError):  # online data unreachable: cannot decontaminate against it
            skipped.append(name)
            continue
        for ex in examples:
            grams |= ngrams(task.prompt_text(ex), n)
    return frozenset(grams), tuple(skipped)


def decontaminate(texts: Sequence[str], n: int = DEFAULT_N, tasks: Iterable[str] | None = None) -> list[bool]:
    """``keep[i]`` is False when ``texts[i]`` shares an n-gram with an eval prompt."""
    grams, _ = eval_ngrams(n, tuple(tasks) if tasks is not None else None)
    return [not (ngrams(t, n) & grams) for t in texts]


def load_pool(
    name: str,
    limit: int | None = None,
    seed: int = 0,
    n: int = DEFAULT_N,
    data_file: str | None = None,
    clean: bool = True,
    split: str = "train",
) -> list[dict[str, Any]]:
    """Prompts of pool ``name``: decontaminated (``clean``), shuffled with ``seed``, first ``limit``.

    ``split`` picks the task split an offline pool reads (``train``; the world pools also have ``val``). Rows of
    the world pools (``world-*``) carry the gold answer as ``response`` (ground truth for a labelled subset);
    the other offline pools have none.
    """
    if name not in POOLS:
        raise KeyError(f"unknown prompt pool {name!r}; known pools: {', '.join(sorted(POOLS))}")
    pool = POOLS[name]
    rows: list[dict[str, Any]] = []
    if not pool.online:
        task = get_task(name)
        with_gold = name.startswith("world-")
        for ex in task.examples(split):
            row = {
                "id": ex.id,
                "pool": name,
                "prompt": task.prompt(ex),
                "text": task.prompt_text(ex),
                "response": task.gold(ex) if with_gold else None,
            }
            if task.needs_image:  # the suite's prompts stage renders it (task.image) into its own directory
                row["image_of"] = {"task": name, "id": ex.id, "split": split}
            rows.append(row)
    else:
        if split != "train":
            raise TaskDataError(f"prompt pool {name!r} is online and has only the 'train' split, not {split!r}")
        dataset_id, hub_split, convert = _HUB[name]
        raw = read_rows(data_file) if data_file else hub_rows(name, dataset_id, hub_split)
        base = Path(data_file).parent if data_file else None
        for i, row in enumerate(raw):
            text, response = convert(row)
            item = {"id": str(i), "pool": name, "prompt": user(text), "text": text, "response": response}
            if "image" in row:  # an image pool: the image (hub: a PIL image; a file: a path) travels with the row
                image = row["image"].get("path") if isinstance(row["image"], dict) else row["image"]
                if isinstance(image, str) and base is not None and not Path(image).is_absolute():
                    image = str(base / image)
                item["image_obj"] = image
            rows.append(item)
    if clean:
        # The world pools' splits are disjoint from their own test split by construction (a prompt's split is a
        # hash of its text, see tasks/world.py), so for them this pass only guards against other tasks' test
        # prompts; it stays cheap (~0.1 s for 20k short world prompts once the eval n-grams are built), so it runs.
        keep = decontaminate([r["text"] for r in rows], n)
        rows = [r for r, k in zip(rows, keep, strict=True) if k]
    if not rows:
        raise TaskDataError(f"prompt pool {name!r} is empty after decontamination")
    seeded_rng("pool", name, seed).shuffle(rows)
    return rows[:limit] if limit else rows


def prompt_slices(
    pools: Sequence[str],
    n_train: int,
    n_val: int,
    n_heldout: int,
    n_labelled: int,
    seed: int,
    data_files: dict[str, str],
    need_responses: bool = False,
) -> dict[str, list[dict[str, Any]]]:
    """A suite's distillation prompts in four slices: ``train``, ``val`` (the only prompts DistiLLM's schedule reads)
    and ``heldout`` (fidelity evaluation only) are disjoint; ``labelled`` is the first ``n_labelled`` of ``train``
    (its ground truth trains the init and SFT). Drawn evenly from ``pools``, then shuffled with ``seed``. Rows are
    ``{prompt, pool, response}``; ``need_responses``: every row must have a response."""
    import random

    per_pool = -(-(n_train + n_val + n_heldout) // len(pools))
    rows = []
    for name in pools:
        rows.extend(load_pool(name, limit=per_pool, seed=seed, data_file=data_files.get(name)))
    random.Random(seed).shuffle(rows)
    need = n_train + n_val + n_heldout
    if len(rows) < need:
        raise ValueError(f"prompt pools {list(pools)} hold {len(rows)} prompts; the suite needs {need}")
    keep = ("prompt", "pool", "response")
    rows = [
        {k: r.get(k) for k in keep} | {k: r[k] for k in ("image_of", "image_obj") if k in r}  # an image row's image
        for r in rows[:need]
    ]
    train, val, held = rows[:n_train], rows[n_train : n_train + n_val], rows[n_train + n_val :]
    if need_responses and any(r["response"] is None for r in rows):
        raise ValueError(f"prompts.responses_from=pool, but pools {list(pools)} have prompts without responses")
    labelled = train[:n_labelled]
    if any(r["response"] is None for r in labelled):
        raise ValueError(
            f"prompts.n_labelled={n_labelled}, but pools {list(pools)} have prompts without a ground-truth response"
        )
    return {"train": train, "val": val, "heldout": held, "labelled": labelled}
