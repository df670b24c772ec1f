"""MBPP (Austin et al. 2021), hub ``google-research-datasets/mbpp`` (config ``full``, test split): online only.

A local JSON/JSONL file with the hub schema (``task_id, text, code, test_list, test_setup_code``) can stand in
(``data_files=mbpp=PATH``); the tests use such a fixture. Prompt as in the MBPP paper: the task text plus the
asserts the code must pass.
"""

from __future__ import annotations

import re

from tasks import register_task
from tasks.base import CodeTask, Example, GenerationSpec, Message, TaskDataError, user
from tasks.scoring import extract_code
from tasks.sources import hub_rows, read_rows


@register_task("mbpp")
class MBPP(CodeTask):
    version = 1
    source = "hub:google-research-datasets/mbpp (full, test)"
    online = True
    description = "MBPP, 500 test problems, pass@k in the sandbox"
    generation = GenerationSpec(max_new_tokens=512)

    def load_examples(self, split: str) -> list[Example]:
        rows = (
            read_rows(self.data_file)
            if self.data_file
            else hub_rows(self.name, "google-research-datasets/mbpp", "test", "full")
        )
        out = []
        for row in rows:
            tests = list(row.get("test_list") or [])
            found = re.search(r"assert\s+(?:not\s+)?\(?\s*(\w+)\s*\(", tests[0]) if tests else None
            if found is None:
                raise TaskDataError(f"task 'mbpp': problem {row.get('task_id')} has no assert naming its function")
            out.append(
                Example(
                    id=str(row["task_id"]),
                    data={
                        "text": row["text"],
                        "tests": tests,
                        "setup": row.get("test_setup_code") or "",
                        "entry_point": found.group(1),
                    },
                    target=row["code"],
                )
            )
        return out

    def prompt(self, example: Example) -> list[Message]:
        tests = "\n".join(example.data["tests"])
        return user(
            f"You are an expert Python programmer, and here is your task: {example.data['text']} "
            f"Your code should pass these tests:\n\n{tests}\n\nReply with the code in one ```python code block."
        )

    def program(self, example: Example, completion: str) -> str:
        code = extract_code("", completion, example.data["entry_point"])
        return "\n".join([example.data["setup"], code, "", *example.data["tests"], ""])
