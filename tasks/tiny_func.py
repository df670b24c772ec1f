"""Smoke-sized code (procedural): one-line Python functions ("return x + 3") checked in the sandbox.

Completion-style prompt: the signature and docstring, the model writes the body (HumanEval format), so a tiny
model trained for seconds can pass some. Deterministic per (split, version); train never repeats a test function."""

from __future__ import annotations

from tasks import register_task
from tasks.base import CodeTask, Example, GenerationSpec, Message, user
from tasks.humaneval import problem_program
from tasks.sources import seeded_rng

SIZES = {"test": 40, "train": 400}
# name template, docstring, body, python expression for the expected value
KINDS = {
    "add": ("add_{k}", "Return x plus {k}.", "x + {k}"),
    "sub": ("sub_{k}", "Return x minus {k}.", "x - {k}"),
    "mul": ("times_{k}", "Return x multiplied by {k}.", "x * {k}"),
    "mod": ("mod_{k}", "Return x modulo {k}.", "x % {k}"),
    "max": ("max_with_{k}", "Return the larger of x and {k}.", "max(x, {k})"),
    "eq": ("is_{k}", "Return True if x equals {k}, else False.", "x == {k}"),
}


def _example(split: str, i: int, kind: str, k: int) -> Example:
    name_t, doc_t, body_t = KINDS[kind]
    name, doc, body = name_t.format(k=k), doc_t.format(k=k), body_t.format(k=k)
    prompt = f'def {name}(x: int):\n    """{doc}"""\n'
    inputs = [0, 1, 2, 7, 13, 42, -5]
    test = "def check(candidate):\n" + "".join(
        f"    assert candidate({v}) == {eval(body, {'x': v})!r}\n"  # noqa: S307 - literal ints from this file
        for v in inputs
    )
    data = {"prompt": prompt, "entry_point": name, "test": test}
    return Example(id=f"{split}/{i}", data=data, target=f"    return {body}\n")


@register_task("tiny-func")
class TinyFunc(CodeTask):
    version = 1
    source = "generator:tiny-func (6 kinds x k in 1..99)"
    splits = ("test", "train")
    ks = (1,)
    description = "smoke: one-line Python functions, pass@1 in the sandbox"
    generation = GenerationSpec(max_new_tokens=32, plain_stop=("\ndef ", "\nclass ", "\nif __name__", "\nprint("))

    def load_examples(self, split: str) -> list[Example]:
        rng = seeded_rng(self.name, "all", 1)
        pool = [(kind, k) for kind in sorted(KINDS) for k in range(2, 100)]
        rng.shuffle(pool)
        items = pool[: SIZES["test"]] if split == "test" else pool[SIZES["test"] : SIZES["test"] + SIZES["train"]]
        return [_example(split, i, kind, k) for i, (kind, k) in enumerate(items)]

    def prompt(self, example: Example) -> list[Message]:
        return user(f"Complete this Python function:\n```python\n{example.data['prompt']}```")

    def plain_prompt(self, example: Example) -> str:
        return example.data["prompt"]

    def program(self, example: Example, completion: str) -> str:
        return problem_program(example.data, completion)
