"""TextVQA (Singh et al. 2019), validation (5000 questions about text in images), hub ``lmms-lab/textvqa``:
DistiLLM-2's VLM evaluation (its Table 7), standard VQA accuracy. Schema: ``question_id``, ``question``,
``answers`` (10), ``image``, ``image_id``, ``ocr_tokens``, ...; a local file with it stands in for the hub. Without
OCR tokens in the prompt (LLaVA-1.5 adds them; DistiLLM-2 does not say), as lmms-eval's default."""

from __future__ import annotations

from tasks import register_task
from tasks.vqa_hub import HubVQATask


@register_task("textvqa")
class TextVQA(HubVQATask):
    version = 1
    source = "hub:lmms-lab/textvqa"
    hub_split = "validation"
    description = "TextVQA validation (5000 questions on text in images), VQA accuracy"
