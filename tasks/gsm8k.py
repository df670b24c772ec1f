"""GSM8K (Cobbe et al. 2021), hub ``openai/gsm8k`` (config ``main``): online only; a local file with the hub
schema (``question``, ``answer`` ending in ``#### <number>``) can stand in. Greedy, final-number accuracy."""

from __future__ import annotations

from tasks import register_task
from tasks.base import Example, MathAnswerTask, TaskDataError
from tasks.sources import hub_rows, read_rows


@register_task("gsm8k")
class GSM8K(MathAnswerTask):
    version = 1
    source = "hub:openai/gsm8k (main)"
    online = True
    description = "GSM8K grade-school math (1319 test), final-answer accuracy"

    def load_examples(self, split: str) -> list[Example]:
        rows = read_rows(self.data_file) if self.data_file else hub_rows(self.name, "openai/gsm8k", split, "main")
        out = []
        for i, row in enumerate(rows):
            if "####" not in row.get("answer", ""):
                raise TaskDataError(f"task 'gsm8k': row {i} has no '#### <answer>' in its answer field")
            final = row["answer"].rsplit("####", 1)[1].strip().replace(",", "")
            out.append(
                Example(id=f"{split}/{i}", data={"question": row["question"], "solution": row["answer"]}, target=final)
            )
        return out
