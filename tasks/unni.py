"""Unnatural Instructions, references of >= 11 words (MiniLLM 11_ split): a DistiLLM evaluation set, hub ``MiniLLM/uinst`` (online only), scored by ROUGE-L.

Schema (MiniLLM release): ``instruction``, ``input``, ``output`` (a string or a list of references). A local
JSON/JSONL file with that schema stands in for the hub (``data_files=unni=PATH``); the tests use a fixture.
DistiLLM protocol: 5 seeds, sampling at T=1 with no_repeat_ngram_size=6 (``protocol=distillm`` in the eval config).
"""

from __future__ import annotations

from tasks import register_task
from tasks.minillm import MiniLLMEvalSet


@register_task("unni")
class UnNI(MiniLLMEvalSet):
    version = 1
    min_ref_words = 11
    source = "hub:MiniLLM/uinst"
    description = "Unnatural Instructions, references of >= 11 words (MiniLLM 11_ split), ROUGE-L"
