"""``world-code`` sampled: the same prompts and unit tests, 5 samples per prompt at T = 1, scored by the unbiased
pass@1 and pass@5 estimators (``tasks/world_code.py`` has the task and its sandboxed scoring)."""

from __future__ import annotations

from tasks import register_task
from tasks.base import GenerationSpec
from tasks.world_code import WorldCode


@register_task("world-code-sampled")
class WorldCodeSampled(WorldCode):
    version = 1
    description = "world: world-code sampled at T=1, 5 samples per prompt; unbiased pass@1 and pass@5"
    metrics = ("pass@1", "pass@5")
    primary_metric = "pass@5"
    generation = GenerationSpec(max_new_tokens=40, temperature=1.0, n=5, stop=("\n",))
