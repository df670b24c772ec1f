"""The task interface: Example, Score, GenerationSpec and the Task base class.

A task provides data (``examples``), prompts (``prompt`` / ``plain_prompt``), generation settings and a scorer.
Prompts are ordinary Python: ``prompt`` returns chat messages, which the eval runner renders with the model's
chat template when it has one; ``plain_prompt`` is the completion-style text used for models without a template
(or with ``chat=off``). No template DSL is involved, so braces in data are never interpreted.
"""

from __future__ import annotations

import hashlib
import json
import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Literal

Category = Literal["instruction", "code", "math", "caption", "vqa"]
CATEGORIES: tuple[str, ...] = ("instruction", "code", "math", "caption", "vqa")
Message = dict[str, str]


class TaskDataError(RuntimeError):
    """Task data is missing, empty or malformed (one-line message naming the task and the source)."""


@dataclass(frozen=True)
class Example:
    """One eval (or training-prompt) item.

    ``data`` holds the task-specific fields and must be JSON-serialisable. ``target`` is the gold answer: a
    completion equal to ``Task.gold(example)`` scores 1. ``references`` are reference responses for
    similarity metrics (ROUGE-L takes the max over them).
    """

    id: str
    data: dict[str, Any]
    target: str = ""
    references: tuple[str, ...] = ()

    def to_json(self) -> dict[str, Any]:
        return {"id": self.id, "data": self.data, "target": self.target, "references": list(self.references)}


@dataclass(frozen=True)
class Score:
    """The score of one completion: ``value`` is the primary metric, ``metrics`` every metric (incl. primary)."""

    value: float
    metrics: dict[str, float]
    extracted: str | None = None
    detail: str = ""


@dataclass(frozen=True)
class GenerationSpec:
    """Default generation settings of a task (the eval config can override temperature, seeds, ...).

    ``stop`` applies always; ``plain_stop`` is added only for completion-style (non-chat) prompts, e.g. the
    classic HumanEval stop words, which would cut a chat model's code block short.
    """

    max_new_tokens: int = 256
    temperature: float = 0.0
    top_p: float = 1.0
    top_k: int = 0
    stop: tuple[str, ...] = ()
    plain_stop: tuple[str, ...] = ()
    no_repeat_ngram_size: int = 0
    n: int = 1


class Task:
    """Base class. Subclasses set the class attributes and implement ``load_examples``, ``prompt``, ``score``
    and ``gold``.

    ``source`` says where the data comes from: ``package:<dist>/<file>`` (a file shipped in an installed
    package), ``hub:<dataset id>`` (online only; a local file with the same schema can stand in, see
    ``data_file``) or ``generator:<what>`` (deterministic procedural data).
    """

    name: ClassVar[str] = ""  # set by @register_task
    category: ClassVar[Category]
    version: ClassVar[int] = 1
    source: ClassVar[str] = ""
    description: ClassVar[str] = ""
    online: ClassVar[bool] = False  # True: the default source is the hub
    splits: ClassVar[tuple[str, ...]] = ("test",)
    metrics: ClassVar[tuple[str, ...]] = ("score",)
    primary_metric: ClassVar[str] = "score"
    #: metrics where a lower value is better (an error rate, a length); every other metric: higher is better
    lower_is_better: ClassVar[tuple[str, ...]] = ()
    generation: ClassVar[GenerationSpec] = GenerationSpec()
    # A completion that must score 0 (contract test); override where this string could be a right answer.
    junk_completion: ClassVar[str] = "zqx vbn wkj"
    #: True: every example comes with an image (:meth:`image`), its prompt holds the ``<image>`` placeholder
    needs_image: ClassVar[bool] = False

    def __init__(self, data_file: str | None = None) -> None:
        self.data_file = data_file
        self._cache: dict[str, list[Example]] = {}

    # ----- data -------------------------------------------------------------------------------------------
    def load_examples(self, split: str) -> list[Example]:
        raise NotImplementedError

    def examples(self, split: str = "test") -> list[Example]:
        """The examples of ``split`` (cached). Raises TaskDataError for an unknown split or an empty result."""
        if split not in self.splits:
            raise TaskDataError(f"task {self.name!r} has no split {split!r}; it has: {', '.join(self.splits)}")
        if split not in self._cache:
            rows = self.load_examples(split)
            if not rows:
                raise TaskDataError(f"task {self.name!r}: split {split!r} from {self.source_in_use()} is empty")
            ids = [ex.id for ex in rows]
            if len(set(ids)) != len(ids):
                raise TaskDataError(f"task {self.name!r}: duplicate example ids in split {split!r}")
            self._cache[split] = rows
        return self._cache[split]

    def source_in_use(self) -> str:
        return f"file:{self.data_file}" if self.data_file else self.source

    def data_files(self) -> list[Path]:
        """Files the examples were read from (hashed into the run record). Generators return []."""
        return [Path(self.data_file)] if self.data_file else []

    def fingerprint(self, split: str = "test") -> str:
        """sha256 of the canonical JSON of the examples: the dataset hash recorded with every score."""
        digest = hashlib.sha256()
        for ex in self.examples(split):
            digest.update(json.dumps(ex.to_json(), sort_keys=True, ensure_ascii=False).encode("utf-8"))
            digest.update(b"\n")
        return digest.hexdigest()

    # ----- prompts ----------------------------------------------------------------------------------------
    def prompt(self, example: Example) -> list[Message]:
        """Chat messages for ``example`` (rendered with the model's chat template when it has one)."""
        raise NotImplementedError

    def plain_prompt(self, example: Example) -> str:
        """Completion-style prompt for models without a chat template: the message contents, then a newline."""
        return "\n\n".join(m["content"] for m in self.prompt(example)) + "\n"

    def prompt_text(self, example: Example) -> str:
        """Text a prompt carries, for decontamination (n-gram overlap) checks."""
        return " ".join(m["content"] for m in self.prompt(example))

    def image(self, example: Example) -> Any:
        """The example's image (a PIL image) for an image task; None otherwise."""
        return None

    # ----- scoring ----------------------------------------------------------------------------------------
    def score(self, example: Example, completion: str) -> Score:
        raise NotImplementedError

    def gold(self, example: Example) -> str:
        """A completion that scores 1 (used by the contract tests)."""
        return example.target

    def score_many(self, example: Example, completions: Sequence[str]) -> list[Score]:
        """Scores of several samples of one example (code tasks run them in parallel)."""
        return [self.score(example, c) for c in completions]

    def score_batch(self, examples: Sequence[Example], completions: Sequence[Sequence[str]]) -> list[list[Score]]:
        """Scores of every example's samples at once (the eval runner's path); code tasks batch their sandbox runs."""
        return [self.score_many(ex, comps) for ex, comps in zip(examples, completions, strict=True)]

    def aggregate(self, scores: Sequence[Sequence[Score]]) -> dict[str, float]:
        """Per-example mean over samples, then mean over examples, for every metric (pass@k tasks override)."""
        per_example = [s for s in scores if s]
        if not per_example:
            return {}
        names = per_example[0][0].metrics
        return {
            m: statistics.fmean(statistics.fmean(x.metrics.get(m, 0.0) for x in s) for s in per_example) for m in names
        }

    # ----- description ------------------------------------------------------------------------------------
    def info(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "category": self.category,
            "version": self.version,
            "source": self.source,
            "online": self.online,
            "metrics": list(self.metrics),
            "primary_metric": self.primary_metric,
            "higher_is_better": {m: m not in self.lower_is_better for m in self.metrics},
        }


def user(content: str, system: str | None = None) -> list[Message]:
    """One user turn, optionally preceded by a system message."""
    msgs: list[Message] = [{"role": "system", "content": system}] if system else []
    return [*msgs, {"role": "user", "content": content}]


ALPACA_PROMPT = (
    "Below is an instruction that describes a task. Write a response that appropriately completes the request.\n\n"
    "### Instruction:\n{instruction}\n\n### Response:\n"
)
ALPACA_PROMPT_INPUT = (
    "Below is an instruction that describes a task, paired with an input that provides further context. "
    "Write a response that appropriately completes the request.\n\n"
    "### Instruction:\n{instruction}\n\n### Input:\n{input}\n\n### Response:\n"
)


class ReferenceTask(Task):
    """Open-ended instruction following scored by ROUGE-L F against reference responses (DistiLLM protocol).

    Examples carry ``data = {"instruction", "input"}`` and ``references``. The plain (non-chat) prompt is the
    Alpaca template the DistiLLM/MiniLLM scripts use; the chat prompt is the instruction (+ input) as one user turn.
    """

    category: ClassVar[Category] = "instruction"
    metrics: ClassVar[tuple[str, ...]] = ("rougeL",)
    primary_metric: ClassVar[str] = "rougeL"
    generation: ClassVar[GenerationSpec] = GenerationSpec(max_new_tokens=256)

    def prompt(self, example: Example) -> list[Message]:
        inp = example.data.get("input") or ""
        return user(example.data["instruction"] + (f"\n\n{inp}" if inp else ""))

    def plain_prompt(self, example: Example) -> str:
        inp = example.data.get("input") or ""
        if inp:
            return ALPACA_PROMPT_INPUT.format(instruction=example.data["instruction"], input=inp)
        return ALPACA_PROMPT.format(instruction=example.data["instruction"])

    def gold(self, example: Example) -> str:
        return example.references[0]

    def score(self, example: Example, completion: str) -> Score:
        from tasks.scoring import rouge_l

        value = rouge_l(completion, example.references)
        return Score(value=value, metrics={"rougeL": value})


def instruction_examples(rows: Sequence[dict[str, Any]], task: str, min_ref_words: int = 1) -> list[Example]:
    """Examples from rows with the MiniLLM/DistiLLM schema: ``instruction``, ``input``, ``output`` (str or list).

    References with fewer than ``min_ref_words`` words are dropped (S-NI/UnNI use the ``11_`` rule: >= 11 tokens,
    approximated here by words); rows left without a reference are skipped.
    """
    out = []
    for i, row in enumerate(rows):
        if "instruction" not in row or "output" not in row:
            raise TaskDataError(f"task {task!r}: row {i} lacks 'instruction'/'output' (keys: {sorted(row)})")
        outputs = row["output"] if isinstance(row["output"], list) else [row["output"]]
        refs = tuple(o for o in outputs if isinstance(o, str) and len(o.split()) >= max(1, min_ref_words))
        if refs:
            data = {"instruction": row["instruction"], "input": row.get("input") or ""}
            out.append(Example(id=str(row.get("id", i)), data=data, target=refs[0], references=refs))
    return out


class MathAnswerTask(Task):
    """Math with a single final answer: greedy, answer extracted (boxed / #### / last number) and normalised."""

    category: ClassVar[Category] = "math"
    metrics: ClassVar[tuple[str, ...]] = ("accuracy",)
    primary_metric: ClassVar[str] = "accuracy"
    generation: ClassVar[GenerationSpec] = GenerationSpec(max_new_tokens=512)
    instruction: ClassVar[str] = "Please reason step by step, and put your final answer within \\boxed{}."

    def prompt(self, example: Example) -> list[Message]:
        return user(f"{example.data['question']}\n\n{self.instruction}")

    def plain_prompt(self, example: Example) -> str:
        return f"Problem:\n{example.data['question']}\n\n{self.instruction}\n\nSolution:\n"

    def gold(self, example: Example) -> str:
        return f"The final answer is \\boxed{{{example.target}}}."

    def score(self, example: Example, completion: str) -> Score:
        from tasks.scoring import extract_answer, math_equal

        answer = extract_answer(completion)
        value = float(math_equal(answer, example.target))
        return Score(value=value, metrics={"accuracy": value}, extracted=answer)


class CodeTask(Task):
    """Code generation: each completion becomes a program run in the sandbox; pass@k over samples."""

    category: ClassVar[Category] = "code"
    metrics: ClassVar[tuple[str, ...]] = ("pass@1",)
    primary_metric: ClassVar[str] = "pass@1"
    ks: ClassVar[tuple[int, ...]] = (1, 10)
    timeout_s: ClassVar[float] = 3.0

    def program(self, example: Example, completion: str) -> str:
        """The full program (solution + tests) whose clean run means the completion passes."""
        raise NotImplementedError

    def score(self, example: Example, completion: str) -> Score:
        return self.score_many(example, [completion])[0]

    def score_many(self, example: Example, completions: Sequence[str]) -> list[Score]:
        from tasks.sandbox import Limits, run_many

        results = run_many([self.program(example, c) for c in completions], Limits(timeout_s=self.timeout_s))
        return [Score(float(r.passed), {"pass@1": float(r.passed)}, detail=r.status) for r in results]

    def aggregate(self, scores: Sequence[Sequence[Score]]) -> dict[str, float]:
        from tasks.scoring import pass_at_k

        correct = [[s.value == 1.0 for s in group] for group in scores if group]
        return pass_at_k(correct, self.ks)
