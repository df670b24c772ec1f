"""A small synthetic prompt/response set (additions and word repetition) for trainer tests and benchmarks.

Tiny models learn it within a few hundred steps, so divergences between a briefly trained teacher and its
student are informative. Rows alternate: ``What is a + b?`` -> ``The answer is c.``; ``Repeat: w1 w2 ...`` -> the
same words.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

WORDS = ("cat", "dog", "river", "tree", "city", "number", "list", "answer", "question", "word", "model", "student",
         "teacher")  # fmt: skip


def write_synthetic_data(
    path: Path, n: int, *, seed: int = 0, max_operand: int = 20, words: tuple[str, ...] = WORDS, repeat: int = 3
) -> Path:
    """Write ``n`` JSONL rows of ``{prompt, response}`` to ``path`` (deterministic in ``seed``)."""
    rng = random.Random(seed)
    with open(path, "w") as fh:
        for i in range(n):
            if i % 2:
                a, b = rng.randint(0, max_operand), rng.randint(0, max_operand)
                row = {"prompt": f"What is {a} + {b}?", "response": f"The answer is {a + b}."}
            else:
                ws = " ".join(rng.sample(words, repeat))
                row = {"prompt": f"Repeat: {ws}", "response": ws}
            fh.write(json.dumps(row) + "\n")
    return path
