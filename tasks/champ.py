"""CHAMP competition math (Mao et al. 2024) from the ``champ-dataset`` package.

Only problems whose final answer is a single number are kept (exact match is meaningful for them); the others
have free-form answers ("No", "0 is the only possible value", formulas in n) that need a judge.
"""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path

from tasks import register_task
from tasks.base import Example, MathAnswerTask
from tasks.scoring import normalize_math, parse_number
from tasks.sources import package_file, read_rows

CHAMP_FILE = "champ_dataset/dataset_files/v0.json"


@register_task("champ")
class Champ(MathAnswerTask):
    version = 1
    source = f"package:champ-dataset/{CHAMP_FILE}"
    description = "CHAMP problems with a numeric final answer, boxed-answer accuracy"

    def load_examples(self, split: str) -> list[Example]:
        path = self.data_file or package_file("champ-dataset", CHAMP_FILE)
        rows = read_rows(path) if self.data_file else list(_problems(path).values())
        out = []
        for row in rows:
            answer = str(row["_answer"]).strip()
            if parse_number(normalize_math(answer)) is None:
                continue
            out.append(
                Example(
                    id=row["identifier"],
                    data={"question": row["_text"], "topic": row["category"]},
                    target=answer,
                )
            )
        return out


@lru_cache(maxsize=2)
def _problems(path: Path) -> dict:
    """The problems of the 72 MB CHAMP file (parsed once per process; it also holds model transcripts)."""
    with open(path, encoding="utf-8") as fh:
        return json.load(fh)["problems"]
