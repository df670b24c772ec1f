"""Smoke-sized arithmetic (procedural): "What is 17 + 25?" -> 42. Small operands so that a tiny model trained
for seconds can score above zero. Deterministic: the examples depend only on (task, split, version); training
prompts (split ``train``) never repeat a test question."""

from __future__ import annotations

from tasks import register_task
from tasks.base import Example, GenerationSpec, MathAnswerTask, Message, user
from tasks.sources import seeded_rng

SIZES = {"test": 100, "train": 1000}
OPS = ("+", "-", "*")


def _question(a: int, op: str, b: int) -> tuple[str, int]:
    value = {"+": a + b, "-": a - b, "*": a * b}[op]
    return f"What is {a} {op} {b}?", value


@register_task("arith")
class Arith(MathAnswerTask):
    version = 1
    source = "generator:arith (a op b, 0 <= a, b < 50)"
    splits = ("test", "train")
    description = "smoke: two-operand integer arithmetic, final-number accuracy"
    instruction = "Answer with the number only."
    generation = GenerationSpec(max_new_tokens=16, stop=("\n",))

    def load_examples(self, split: str) -> list[Example]:
        test = _make(self.name, "test", SIZES["test"], exclude=set())
        if split == "test":
            return test
        return _make(self.name, "train", SIZES["train"], exclude={ex.data["question"] for ex in test})

    def prompt(self, example: Example) -> list[Message]:
        return user(f"{example.data['question']} {self.instruction}")

    def plain_prompt(self, example: Example) -> str:
        return f"Q: {example.data['question']}\nA:"

    def gold(self, example: Example) -> str:
        return f" {example.target}"


def _make(name: str, split: str, n: int, exclude: set[str]) -> list[Example]:
    rng = seeded_rng(name, split, 1)
    seen = set(exclude)
    out = []
    while len(out) < n:
        op = rng.choice(OPS)
        a, b = rng.randrange(50), rng.randrange(10 if op == "*" else 50)
        question, value = _question(a, op, b)
        if question in seen:
            continue
        seen.add(question)
        out.append(Example(id=f"{split}/{len(out)}", data={"question": question}, target=str(value)))
    return out
