"""Shared helpers for the trainer tests: a tiny prompt/response set and a briefly trained tiny teacher."""

from __future__ import annotations

import json
import random
from pathlib import Path

WORDS = [
    "cat",
    "dog",
    "river",
    "tree",
    "city",
    "number",
    "list",
    "answer",
    "question",
    "word",
    "model",
    "student",
    "teacher",
]


def write_train_data(path: Path, n: int = 48, seed: int = 0) -> Path:
    rng = random.Random(seed)
    with open(path, "w") as fh:
        for i in range(n):
            if i % 2:
                a, b = rng.randint(0, 20), rng.randint(0, 20)
                row = {"prompt": f"What is {a} + {b}?", "response": f"The answer is {a + b}."}
            else:
                ws = " ".join(rng.sample(WORDS, 3))
                row = {"prompt": f"Repeat: {ws}", "response": ws}
            fh.write(json.dumps(row) + "\n")
    return path


def base_overrides(data: Path, teacher: str, out: Path) -> list[str]:
    return [
        f"data.train_file={data}",
        f"teacher.name={teacher}",
        f"student.name={teacher}",
        "student.prune_layers=2",
        f"output_dir={out}",
        "optim.batch_size=4",
        "optim.lr=2e-3",
        "teacher_sampling.max_new_tokens=10",
        "student_sampling.max_new_tokens=10",
        "student_sampling.temperature=1.0",
        "gen_batch_size=16",
        "resume=never",
    ]
