"""Vicuna eval prompts (80) with reference answers: a DistiLLM evaluation set, hub ``MiniLLM/Vicuna`` (online only), scored by ROUGE-L.

Schema (MiniLLM release): ``instruction``, ``input``, ``output`` (a string or a list of references). A local
JSON/JSONL file with that schema stands in for the hub (``data_files=vicuna=PATH``); the tests use a fixture.
DistiLLM protocol: 5 seeds, sampling at T=1 with no_repeat_ngram_size=6 (``protocol=distillm`` in the eval config).
"""

from __future__ import annotations

from tasks import register_task
from tasks.base import Example, ReferenceTask, instruction_examples
from tasks.sources import hub_rows, read_rows


@register_task("vicuna")
class Vicuna(ReferenceTask):
    version = 1
    source = "hub:MiniLLM/Vicuna"
    online = True
    description = "Vicuna eval prompts (80) with reference answers, ROUGE-L"

    def load_examples(self, split: str) -> list[Example]:
        rows = read_rows(self.data_file) if self.data_file else hub_rows(self.name, "MiniLLM/Vicuna", "train")
        return instruction_examples(rows, self.name, min_ref_words=0)
