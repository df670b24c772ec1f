"""Vicuna eval prompts (80) with reference answers: a DistiLLM evaluation set, hub ``MiniLLM/Vicuna`` (online only), scored by ROUGE-L.

Schema (MiniLLM release): ``instruction``, ``input``, ``output`` (a string or a list of references). A local
JSON/JSONL file with that schema stands in for the hub (``data_files=vicuna=PATH``); the tests use a fixture.
DistiLLM protocol: 5 seeds, sampling at T=1 with no_repeat_ngram_size=6 (``protocol=distillm`` in the eval config).
"""

from __future__ import annotations

from tasks import register_task
from tasks.minillm import MiniLLMEvalSet


@register_task("vicuna")
class Vicuna(MiniLLMEvalSet):
    version = 1
    source = "hub:MiniLLM/Vicuna"
    description = "Vicuna eval prompts (80) with reference answers, ROUGE-L"
