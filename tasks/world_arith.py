"""World arithmetic: a chain of one-digit additions and subtractions answered with a worked trace.

Prompt ``sum 3+4-2+5``: a start digit 1..9, then 2..5 operations ``+d`` / ``-d`` (d in 1..9), drawn so that the
running total stays within 0..19. Gold: every step as ``a op d=result``, space separated, then ``=<final>``::

    3+4=7 7-2=5 5+5=10 =10

The trace makes a long answer in which a model's own early mistake carries into every later step.

Scores (the completion is whitespace-stripped first):

* ``accuracy`` (primary): the integer at the start of the text after the completion's LAST ``=`` equals the
  final total (no ``=`` or no integer there: 0).
* ``trace_acc``: 1 if the completion's steps (its whitespace-separated tokens, less a final ``=<n>`` token) are
  exactly as many as the prompt's operations, each is of the form ``a op d=r`` with ``a op d == r``, they chain
  (the first left operand is the start digit, every other one the previous result) and each applies the prompt's
  operation and digit at its position; else 0. It does not look at the final answer (``accuracy`` does): a right
  final answer with a wrong trace scores accuracy 1, trace_acc 0.
"""

from __future__ import annotations

import random
import re
from typing import Any

from tasks import register_task
from tasks.base import Example, GenerationSpec, Score
from tasks.world import MAX_GOLD_ARITH, WorldTask, below

MAX_TOTAL = 19
_STEP = re.compile(r"(\d+)([+-])(\d+)=(-?\d+)")
_LEADING_INT = re.compile(r"-?\d+")
# running total -> the steps that keep it within 0..MAX_TOTAL
_CHOICES = {
    t: [("+", d) for d in range(1, 10) if t + d <= MAX_TOTAL] + [("-", d) for d in range(1, 10) if t - d >= 0]
    for t in range(MAX_TOTAL + 1)
}


def trace(start: int, ops: list[tuple[str, int]]) -> tuple[list[str], int]:
    """The steps ``a op d=r`` of a chain and its final value."""
    steps, a = [], start
    for op, d in ops:
        r = a + d if op == "+" else a - d
        steps.append(f"{a}{op}{d}={r}")
        a = r
    return steps, a


def final_answer(completion: str) -> int | None:
    """The integer at the start of the text after the last ``=`` (None when there is none)."""
    text = completion.strip()
    if "=" not in text:
        return None
    m = _LEADING_INT.match(text.rsplit("=", 1)[1].strip())
    return int(m.group()) if m else None


def trace_ok(completion: str, start: int, ops: list[tuple[str, int]]) -> bool:
    """Whether the completion's steps are the right, chained steps of the prompt's operations (see module doc)."""
    tokens = completion.split()
    if tokens and tokens[-1].startswith("="):
        tokens = tokens[:-1]
    if len(tokens) != len(ops):
        return False
    expected = start
    for token, (op, d) in zip(tokens, ops, strict=True):
        m = _STEP.fullmatch(token)
        if not m:
            return False
        a, o, b, r = int(m.group(1)), m.group(2), int(m.group(3)), int(m.group(4))
        if a != expected or o != op or b != d or r != (a + b if o == "+" else a - b):
            return False
        expected = r
    return True


@register_task("world-arith")
class WorldArith(WorldTask):
    category = "math"
    version = 1
    source = "generator:world-arith (one-digit +/- chains of 2-5 steps, totals 0..19, worked trace)"
    description = "world: chained one-digit additions/subtractions with a worked trace; final-answer accuracy"
    metrics = ("accuracy", "trace_acc")
    primary_metric = "accuracy"
    max_gold = MAX_GOLD_ARITH
    generation = GenerationSpec(max_new_tokens=48, stop=("\n",))

    def draw(self, rng: random.Random) -> tuple[str, dict[str, Any]]:
        start = 1 + below(rng, 9)
        total, ops = start, []
        for _ in range(2 + below(rng, 4)):
            choices = _CHOICES[total]
            op, d = choices[below(rng, len(choices))]
            total = total + d if op == "+" else total - d
            ops.append([op, d])
        prompt = f"sum {start}" + "".join(f"{op}{d}" for op, d in ops)
        return prompt, {"start": start, "ops": ops, "answer": total}

    def answer(self, prompt: str, data: dict[str, Any]) -> str:
        steps, final = trace(data["start"], [(op, d) for op, d in data["ops"]])
        return " ".join(steps) + f" ={final}"

    def score(self, example: Example, completion: str) -> Score:
        ops = [(op, d) for op, d in example.data["ops"]]
        answer = final_answer(completion)
        accuracy = float(answer is not None and answer == example.data["answer"])
        trace_acc = float(trace_ok(completion, example.data["start"], ops))
        return Score(
            accuracy,
            {"accuracy": accuracy, "trace_acc": trace_acc},
            extracted=None if answer is None else str(answer),
        )
