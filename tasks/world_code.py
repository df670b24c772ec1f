"""World code: write a one-line Python function ``f`` from a spoken spec; checked by running it in the sandbox.

Prompt ``code: x squared times 3 plus 2``: 1-3 operations applied in order to ``x``, drawn from ``plus k``,
``minus k`` (k in 1..9), ``times k``, ``mod k`` (k in 2..9), ``squared``, ``negated`` and ``halved`` (integer
halving, Python's ``//2``). Gold: ``def f(x): return x**2*3+2``, with the parentheses Python's precedence needs
(``(x+2)*3``, ``(-x)**2``, ``-x**2``). Several right forms exist (``x*3+2``, ``3*x+2``, ``2+x*3``, ``x*x``
for ``x**2``, ``-k+a`` for ``a-k``); each example's gold is one of them, chosen by a stable
hash of the prompt, so a teacher trained on the ground truth spreads its probability over forms.

Scoring: a completion passes if, after stripping surrounding whitespace, it defines ``f`` and ``f(x)`` returns
an ``int`` equal to the reference for every ``x`` in -3..3 (Python semantics: ``%`` and ``//`` floor); any
exception or a time-out fails. All samples of one example (distinct completions once) run in ONE sandboxed
program: each is ``exec``'d in its own namespace under its own ``signal`` timer and the program prints one JSON
line of per-candidate results. If that program dies (a candidate that exits the interpreter, floods the output
or blocks the timer), every candidate is run again in a program of its own.

``world-code`` is greedy pass@1; ``world-code-sampled`` (same examples, same scorer) samples 5 completions at
T=1 and reports the unbiased pass@1 and pass@5.
"""

from __future__ import annotations

import json
import random
from collections.abc import Sequence
from typing import Any, ClassVar

from tasks import register_task
from tasks.base import CodeTask, Example, GenerationSpec, Score
from tasks.world import MAX_GOLD, WorldTask, below, stable_choice

INPUTS = (-3, -2, -1, 0, 1, 2, 3)
PREFIX = "def f(x): return "
# operation -> (range of k, or None for no constant)
OPS: dict[str, range | None] = {
    "plus": range(1, 10),
    "minus": range(1, 10),
    "times": range(2, 10),
    "mod": range(2, 10),
    "squared": None,
    "negated": None,
    "halved": None,
}
# per operation: its (operation, k, prompt words) for every k
_ATOMS = tuple(tuple((op, k, op if k is None else f"{op} {k}") for k in ks or [None]) for op, ks in OPS.items())
ADD, MUL, UNARY, POW, ATOM = 1, 2, 3, 4, 5  # Python precedence levels of the expressions built here
MARKER = "@@world-code@@ "

Expr = tuple[str, int]  # (text, precedence)


def apply(op: str, k: int | None, x: int) -> int:
    """The reference semantics of one operation."""
    if op == "plus":
        return x + k
    if op == "minus":
        return x - k
    if op == "times":
        return x * k
    if op == "mod":
        return x % k
    if op == "squared":
        return x * x
    if op == "negated":
        return -x
    if op == "halved":
        return x // 2
    raise ValueError(f"unknown operation {op!r}")


def reference(ops: Sequence[Sequence[Any]], x: int) -> int:
    for op, k in ops:
        x = apply(op, k, x)
    return x


def _left(e: Expr, need: int) -> str:
    return e[0] if e[1] >= need else f"({e[0]})"


def _right(e: Expr, need: int) -> str:
    """An operand written after an operator: one starting with a minus is parenthesised too (``3*(-x)``)."""
    return e[0] if e[1] >= need and not e[0].startswith("-") else f"({e[0]})"


def _forms_of(op: str, k: int | None, e: Expr) -> list[Expr]:
    """Equivalent Python expressions of ``op`` applied to the expression ``e`` (the canonical one first)."""
    if op == "plus":
        return [(f"{_left(e, ADD)}+{k}", ADD), (f"{k}+{_right(e, ADD)}", ADD)]
    if op == "minus":
        return [(f"{_left(e, ADD)}-{k}", ADD), (f"-{k}+{_right(e, ADD)}", ADD)]
    if op == "times":
        return [(f"{_left(e, MUL)}*{k}", MUL), (f"{k}*{_right(e, POW)}", MUL)]
    if op == "mod":
        return [(f"{_left(e, MUL)}%{k}", MUL)]
    if op == "halved":
        return [(f"{_left(e, MUL)}//2", MUL)]
    if op == "negated":
        return [(f"-{_right(e, POW)}", UNARY)]
    if op == "squared":
        base = _left(e, ATOM)
        return [(f"{base}**2", POW), (f"{base}*{base}", MUL)]
    raise ValueError(f"unknown operation {op!r}")


def forms(ops: Sequence[Sequence[Any]]) -> list[str]:
    """Every equivalent expression this generator writes for ``ops`` (canonical first, no duplicates)."""
    exprs: list[Expr] = [("x", ATOM)]
    for op, k in ops:
        exprs = [f for e in exprs for f in _forms_of(op, k, e)]
    return list(dict.fromkeys(text for text, _ in exprs))


def describe(ops: Sequence[Sequence[Any]]) -> str:
    return "code: x " + " ".join(op if k is None else f"{op} {k}" for op, k in ops)


_PROGRAM = """\
import builtins, json, signal, sys
ITEMS = {items!r}
INPUTS = {inputs!r}
# Candidates of many examples run one after another in this process, so none may change how a later one is scored:
# everything the loop uses is bound here, each candidate gets its own copy of the builtins, and a candidate that
# rebinds a real builtin (import builtins; builtins.all = ...) fails and the originals are put back.
def _main(items, inputs, timeout, marker, _compile=compile, _exec=exec, _dict=dict, _type=type, _int=int,
          _len=len, _zip=zip, _any=any, _print=print, _dumps=json.dumps, _sig=signal, _sys=sys,
          _BaseException=BaseException, _builtins=builtins):
    class _Sink:
        def write(self, s):
            return 0
        def flush(self):
            pass
    class _Timeout(_BaseException):
        pass
    def _alarm(signum, frame):
        raise _Timeout()
    _sig.signal(_sig.SIGALRM, _alarm)
    out, err, safe, res = _sys.stdout, _sys.stderr, _dict(_builtins.__dict__), []
    for src, expected in items:
        status = "failed"
        _sys.stdout = _sys.stderr = _Sink()
        try:
            _sig.setitimer(_sig.ITIMER_REAL, timeout)
            try:
                ns = {{"__name__": "candidate", "__builtins__": _dict(safe)}}
                _exec(_compile(src, "<candidate>", "exec"), ns)
                f = ns["f"]
                got = [f(x) for x in inputs]
                ok = _len(got) == _len(expected)
                for g, e in _zip(got, expected):
                    ok = ok and _type(g) is _int and g == e
                status = "passed" if ok else "wrong answer"
            finally:
                _sig.setitimer(_sig.ITIMER_REAL, 0)
        except _Timeout:
            status = "timeout"
        except _BaseException as exc:
            status = "error: " + _type(exc).__name__
        _sys.stdout, _sys.stderr = out, err
        live = _builtins.__dict__
        if _len(live) != _len(safe) or _any(live.get(k) is not v for k, v in safe.items()):
            live.clear()
            live.update(safe)
            status = "error: modified builtins"
        res.append(status)
    _print(marker + _dumps(res))
_main(ITEMS, INPUTS, {timeout!r}, {marker!r})
"""


def _parse(output: str, n: int) -> list[str] | None:
    lines = [line for line in output.splitlines() if line.startswith(MARKER)]
    if not lines:
        return None
    try:
        statuses = json.loads(lines[-1][len(MARKER) :])
    except json.JSONDecodeError:
        return None
    ok = isinstance(statuses, list) and len(statuses) == n and all(isinstance(s, str) for s in statuses)
    return statuses if ok else None


@register_task("world-code")
class WorldCode(WorldTask, CodeTask):
    category = "code"
    world = "world-code"
    version = 1
    source = "generator:world-code (1-3 of plus/minus/times/mod k, squared, negated, halved; several right forms)"
    description = "world: one-line Python function from a spoken spec, 7 unit inputs in the sandbox; greedy pass@1"
    metrics = ("pass@1",)
    primary_metric = "pass@1"
    ks: ClassVar[tuple[int, ...]] = (1, 5)
    generation = GenerationSpec(max_new_tokens=40, temperature=0.0, n=1, stop=("\n",))
    candidate_timeout_s: ClassVar[float] = 1.0

    def draw(self, rng: random.Random) -> tuple[str, dict[str, Any]]:
        picked = []
        for _ in range(1 + below(rng, 3)):
            atoms = _ATOMS[below(rng, len(_ATOMS))]  # an operation, then its constant
            picked.append(atoms[below(rng, len(atoms))])
        return "code: x " + " ".join(text for _, _, text in picked), {"ops": [[op, k] for op, k, _ in picked]}

    def answer(self, prompt: str, data: dict[str, Any]) -> str | None:
        fitting = [f for f in forms(data["ops"]) if len(PREFIX) + len(f) <= MAX_GOLD]
        return PREFIX + stable_choice(f"world-code-form\x1f{prompt}", fitting) if fitting else None

    def expected(self, example: Example) -> list[int]:
        return [reference(example.data["ops"], x) for x in INPUTS]

    def program(self, example: Example, completion: str) -> str:
        """One program checking one completion (the per-process path; same checks as the batched one)."""
        return self.batch_program(example, [completion])

    def batch_program(self, example: Example, completions: Sequence[str]) -> str:
        expected = self.expected(example)
        return self._program_for([(c.strip(), expected) for c in completions])

    def _program_for(self, items: Sequence[tuple[str, list[int]]]) -> str:
        return _PROGRAM.format(
            items=[[src, list(exp)] for src, exp in items],
            inputs=list(INPUTS),
            timeout=self.candidate_timeout_s,
            marker=MARKER,
        )

    def _limits(self, n: int):
        from tasks.sandbox import Limits

        return Limits(timeout_s=2.0 + self.candidate_timeout_s * n)

    def run_batched(self, example: Example, completions: Sequence[str]) -> list[str] | None:
        """Statuses of the completions from ONE sandboxed program, or None if that program died."""
        from tasks.sandbox import SandboxError, run_python

        result = run_python(self.batch_program(example, completions), self._limits(len(completions)))
        if result.status == "sandbox_error":
            raise SandboxError(f"the sandbox failed to run a program: {result.output.strip()[-300:]}")
        return _parse(result.output, len(completions)) if result.passed else None

    def run_separately(self, example: Example, completions: Sequence[str]) -> list[str]:
        """Statuses of the completions, one sandboxed program each."""
        from tasks.sandbox import run_many

        results = run_many([self.program(example, c) for c in completions], self._limits(1))
        out = []
        for r in results:
            parsed = _parse(r.output, 1) if r.passed else None
            out.append(parsed[0] if parsed else r.status)
        return out

    def score_batch(self, examples: Sequence[Example], completions: Sequence[Sequence[str]]) -> list[list[Score]]:
        """Every example's distinct samples in one sandboxed program per core (run in parallel), instead of one
        program per example; an example whose program died is rescored on its own (:meth:`score_many`)."""
        import os

        from tasks.sandbox import SandboxError, run_many

        items = [(i, text) for i, comps in enumerate(completions) for text in dict.fromkeys(c.strip() for c in comps)]
        if not items:
            return [self.score_many(ex, comps) for ex, comps in zip(examples, completions, strict=True)]
        expected = [self.expected(ex) for ex in examples]
        parts = max(1, min(os.cpu_count() or 1, 8, len(items)))
        chunks = [items[k::parts] for k in range(parts)]
        programs = [self._program_for([(text, expected[i]) for i, text in chunk]) for chunk in chunks]
        results = run_many(programs, self._limits(max(len(c) for c in chunks)), workers=parts)
        status: dict[tuple[int, str], str] = {}
        for chunk, result in zip(chunks, results, strict=True):
            if result.status == "sandbox_error":
                raise SandboxError(f"the sandbox failed to run a program: {result.output.strip()[-300:]}")
            parsed = _parse(result.output, len(chunk)) if result.passed else None
            if parsed is not None:
                status.update(zip(chunk, parsed, strict=True))
        out = []
        for i, (ex, comps) in enumerate(zip(examples, completions, strict=True)):
            if all((i, c.strip()) in status for c in comps):
                out.append([self._score(status[(i, c.strip())]) for c in comps])
            else:
                out.append(self.score_many(ex, comps))
        return out

    @staticmethod
    def _score(status: str) -> Score:
        value = float(status == "passed")
        return Score(value, {"pass@1": value}, detail=status)

    def score_many(self, example: Example, completions: Sequence[str]) -> list[Score]:
        unique = list(dict.fromkeys(c.strip() for c in completions))
        statuses = self.run_batched(example, unique)
        if statuses is None:
            statuses = self.run_separately(example, unique)
        by_text = dict(zip(unique, statuses, strict=True))
        out = []
        for c in completions:
            status = by_text[c.strip()]
            value = float(status == "passed")
            out.append(Score(value, {"pass@1": value}, detail=status))
        return out
