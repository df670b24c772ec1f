"""OK-VQA (Marino et al. 2019), val2014 (5046 questions that need outside knowledge), hub ``lmms-lab/OK-VQA``:
DistiLLM-2's VLM evaluation (its Table 7), standard VQA accuracy. Schema: ``question_id``, ``question``,
``answers`` (10), ``image``, ``question_type``, ``answer_type``; a local file with it stands in for the hub."""

from __future__ import annotations

from tasks import register_task
from tasks.vqa_hub import HubVQATask


@register_task("okvqa")
class OKVQA(HubVQATask):
    version = 1
    source = "hub:lmms-lab/OK-VQA"
    hub_split = "val2014"
    description = "OK-VQA val2014 (5046 questions, outside knowledge), VQA accuracy"
