"""DistiLLM's five instruction-following evaluation sets as MiniLLM released them (registers no task): the shared
loader of ``dolly``, ``selfinst``, ``sni``, ``unni`` and ``vicuna``, one file each."""

from __future__ import annotations

from typing import ClassVar

from tasks.base import Example, ReferenceTask, instruction_examples
from tasks.sources import hub_rows, read_rows


class MiniLLMEvalSet(ReferenceTask):
    """One of DistiLLM's five instruction-following evaluation sets as MiniLLM released them (online only): hub
    ``source`` (``hub:<repo>``, its ``train`` split), or a local file with the same schema (``data_files=NAME=PATH``).
    A subclass sets ``source``, ``description`` and ``min_ref_words`` (see :func:`instruction_examples`)."""

    online: ClassVar[bool] = True
    min_ref_words: ClassVar[int] = 0

    def load_examples(self, split: str) -> list[Example]:
        repo = self.source.removeprefix("hub:")
        rows = read_rows(self.data_file) if self.data_file else hub_rows(self.name, repo, "train")
        return instruction_examples(rows, self.name, min_ref_words=self.min_ref_words)
