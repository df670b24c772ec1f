"""Infrastructure of the controlled world (registers no task): splits by prompt hash, the split generator, words.

The world's tasks (``world-arith``, ``world-ifeval``, ``world-code``, ``world-pick``) are procedurally generated
for a tiny character-level Llama teacher and its student. Shared rules:

* **Characters.** Prompts, gold answers and everything a model must emit are printable ASCII (chr 32..126) with
  no newline; prompts and gold responses are at most :data:`MAX_PROMPT` / :data:`MAX_GOLD` characters (a draw
  that would exceed them is discarded), except the arithmetic trace (:data:`MAX_GOLD_ARITH`).
* **Splits by prompt text.** ``bucket(prompt) = zlib.crc32(prompt) % 100`` decides the split of a prompt:
  ``test`` (< 10, held-out evaluation), ``val`` (< 20, validation) and ``train`` (the rest: teacher training data
  and distillation prompts). A prompt therefore belongs to exactly one split in every process and version, so the
  splits are disjoint by construction (no n-gram decontamination is needed between them).
* **Generation.** Each split is drawn from its own seeded stream (``seeded_rng(world name, split, version)``):
  draws whose bucket is not the split's are dropped, repeated prompts are dropped, until the split has its size
  (``test`` and ``val``: 200; ``train``: the task's ``train_size``, 20000 by default). Draws use the cheap
  :func:`below` / :func:`sample` helpers (all four tasks' 20k train splits take ~1.4 s); a choice that must be
  fixed per prompt (the gold of an example with several right answers) uses :func:`stable_choice`. A generator
  whose prompt space cannot supply ``n`` distinct prompts raises TaskDataError (``world-code`` has ~41k train
  prompts, so its ``train_size`` should stay well below that).
"""

from __future__ import annotations

import hashlib
import random
import zlib
from collections.abc import Callable, Sequence
from typing import Any, ClassVar, TypeVar

from tasks.base import Example, GenerationSpec, Message, Task, TaskDataError, user
from tasks.sources import seeded_rng

T = TypeVar("T")
SPLITS: tuple[str, ...] = ("test", "val", "train")
SIZES: dict[str, int] = {"test": 200, "val": 200}
TRAIN_SIZE = 20000
MAX_PROMPT = 40
MAX_GOLD = 40
MAX_GOLD_ARITH = 45
PRINTABLE = frozenset(chr(c) for c in range(32, 127))

# Twelve initial letters x five words of 3-5 lowercase letters (world-pick needs >= 4 words per initial letter).
WORDS: tuple[str, ...] = (
    *("bat", "bee", "bus", "bed", "bench"),
    *("cat", "cup", "cow", "cake", "cloud"),
    *("dog", "den", "dot", "duck", "drum"),
    *("fox", "fan", "fig", "fish", "frog"),
    *("gum", "gem", "goat", "gate", "grape"),
    *("hat", "hen", "hut", "hill", "honey"),
    *("log", "lip", "lamp", "leaf", "lion"),
    *("map", "mud", "mop", "moon", "milk"),
    *("pig", "pen", "pot", "pear", "piano"),
    *("rat", "rug", "ram", "rose", "river"),
    *("sun", "sky", "sea", "sock", "star"),
    *("toy", "tea", "tin", "tree", "tent"),
)
LETTERS: tuple[str, ...] = tuple(sorted({w[0] for w in WORDS}))
BY_LETTER: dict[str, tuple[str, ...]] = {c: tuple(w for w in WORDS if w[0] == c) for c in LETTERS}

# One draw of a generator: (prompt text, task data), or None to discard it. The gold answer is built only for the
# draws that are kept: Answer(prompt, data) -> gold response, or None to discard the draw.
Draw = Callable[[random.Random], "tuple[str, dict[str, Any]] | None"]
Answer = Callable[[str, dict[str, Any]], "str | None"]


def below(rng: random.Random, n: int) -> int:
    """A uniform integer in ``0..n-1`` from one ``rng.random()`` call (cheaper than ``randrange``)."""
    return int(rng.random() * n)


def sample(rng: random.Random, seq: Sequence[T], k: int) -> list[T]:
    """``k`` distinct items of ``seq`` in random order (a partial Fisher-Yates shuffle; cheaper than
    ``rng.sample``)."""
    pool = list(seq)
    n = len(pool)
    for i in range(k):
        j = i + int(rng.random() * (n - i))
        pool[i], pool[j] = pool[j], pool[i]
    return pool[:k]


def stable_choice(key: str, options: Sequence[T]) -> T:
    """One of ``options``, fixed by ``key`` (blake2b of the key: the same in every process)."""
    digest = hashlib.blake2b(key.encode("utf-8"), digest_size=8).digest()
    return options[int.from_bytes(digest, "big") % len(options)]


def bucket(prompt: str) -> int:
    """Stable bucket 0..99 of a prompt text (crc32, independent of the process and of PYTHONHASHSEED)."""
    return zlib.crc32(prompt.encode("utf-8")) % 100


def split_of(prompt: str) -> str:
    """The one split a prompt text belongs to: ``test`` (bucket < 10), ``val`` (< 20) or ``train``."""
    b = bucket(prompt)
    return "test" if b < 10 else "val" if b < 20 else "train"


def printable(text: str) -> bool:
    """Only printable ASCII (chr 32..126): no newline, tab or non-ASCII character."""
    return all(c in PRINTABLE for c in text)


def generate_split(
    world: str, split: str, n: int, draw: Draw, answer: Answer, version: int, max_gold: int = MAX_GOLD
) -> list[Example]:
    """The first ``n`` distinct draws of ``world``'s stream for ``split`` whose prompt hashes into ``split``.

    A draw is dropped when its prompt was seen, hashes into another split, is longer than :data:`MAX_PROMPT`, or
    its gold answer is None or longer than ``max_gold``.
    """
    if split not in SPLITS:
        raise TaskDataError(f"world task {world!r} has no split {split!r}; it has: {', '.join(SPLITS)}")
    rng = seeded_rng(world, split, version)
    seen: set[str] = set()
    out: list[Example] = []
    budget = 50 * n + 10000  # a generator whose prompt space is too small fails loudly instead of looping
    lo, hi = {"test": (0, 10), "val": (10, 20), "train": (20, 100)}[split]
    crc32 = zlib.crc32
    while len(out) < n:
        budget -= 1
        if budget < 0:
            raise TaskDataError(f"world task {world!r}: cannot draw {n} distinct {split!r} prompts (space too small)")
        item = draw(rng)
        if item is None:
            continue
        prompt, data = item
        if prompt in seen or not lo <= crc32(prompt.encode()) % 100 < hi:
            continue
        seen.add(prompt)
        target = answer(prompt, data) if len(prompt) <= MAX_PROMPT else None
        if target is None or len(target) > max_gold:
            continue
        out.append(Example(id=f"{split}/{len(out)}", data={"prompt": prompt, **data}, target=target))
    return out


class WorldTask(Task):
    """Base of the world tasks: three hash-decided splits, a short one-turn prompt, newline-free answers.

    Subclasses implement ``draw(rng)`` (one candidate prompt and its data), ``answer(prompt, data)`` (its gold
    response) and ``score``. ``world`` names the generator
    stream (variants of one task, e.g. ``world-code-sampled``, share it and so share the examples).
    """

    world: ClassVar[str] = ""
    splits: ClassVar[tuple[str, ...]] = SPLITS
    train_size: ClassVar[int] = TRAIN_SIZE
    max_gold: ClassVar[int] = MAX_GOLD
    generation: ClassVar[GenerationSpec] = GenerationSpec(max_new_tokens=40, stop=("\n",))

    def draw(self, rng: random.Random) -> tuple[str, dict[str, Any]] | None:
        raise NotImplementedError

    def answer(self, prompt: str, data: dict[str, Any]) -> str | None:
        raise NotImplementedError

    def load_examples(self, split: str) -> list[Example]:
        n = self.train_size if split == "train" else SIZES[split]
        return generate_split(self.world or self.name, split, n, self.draw, self.answer, self.version, self.max_gold)

    def prompt(self, example: Example) -> list[Message]:
        return user(example.data["prompt"])

    def plain_prompt(self, example: Example) -> str:
        return f"{example.data['prompt']} ="

    def prompt_text(self, example: Example) -> str:
        return example.data["prompt"]
