"""World instructions in the manner of IFEval: a main instruction on a short input, in half the prompts a format.

Main instructions (words from :data:`tasks.world.WORDS`)::

    reverse: cat dog sun      -> sun dog cat       (reverse the order of 2-4 distinct words)
    sort: d b a c             -> a b c d           (sort 3-5 distinct lowercase letters, space separated)
    upper: cat dog            -> CAT DOG           (uppercase 1-3 distinct words)
    count a: fabcaa           -> 3                 (occurrences of a letter in a 3-6 letter string over a-f)
    repeat 3: ab              -> ab ab ab          (a 2-4 letter token repeated 2-4 times, space separated)

Format constraints, appended as `` | <constraint>`` to half of the prompts (never ``commas`` for a one-item
answer): ``in brackets`` (the answer wrapped as ``[...]``), ``commas`` (items separated by ``,`` with no spaces)
and ``end with !`` (the answer ends with ``!``). The gold answer applies both. A draw whose prompt or gold
exceeds 40 characters is discarded.

Checking. The response is whitespace-stripped, then every instruction of the prompt (the main one, and the format
one if present) is checked on its own:

* the main instruction first undoes any format: trailing ``!`` removed, one surrounding ``[...]`` removed,
  each comma (with the whitespace around it) turned into one space; what is left must equal the answer items
  joined by single spaces. So a response with the right content but the wrong format still follows the main
  instruction.
* ``in brackets``: the response starts with ``[`` and ends with ``]``; ``commas``: the response is two or more
  non-empty items separated by single commas, with no whitespace; ``end with !``: the response ends with ``!``.

Metrics: ``prompt_level_strict`` (primary; every instruction followed), ``inst_level_strict`` (the fraction of
the prompt's instructions followed, averaged over prompts), and their loose variants ``prompt_level_loose`` /
``inst_level_loose``: as in IFEval, an instruction passes loosely if it passes on any loose variant of the
response. The variants are all combinations of these transformations, applied in this order: whitespace runs
collapsed to one space, a trailing ``.`` removed, surrounding quotes / backticks / ``*`` removed, lowercased (the
lowercased variants are not used for the content check of ``upper``, which stays case sensitive). The untouched
response is one variant, so loose >= strict.
"""

from __future__ import annotations

import itertools
import random
import re
import string
from collections.abc import Callable
from typing import Any

from tasks import register_task
from tasks.base import Example, GenerationSpec, Score
from tasks.world import WORDS, WorldTask, below, sample

KINDS = ("reverse", "sort", "upper", "count", "repeat")
FORMATS = {"brackets": "in brackets", "commas": "commas", "exclaim": "end with !"}
_COMMA = re.compile(r"\s*,\s*")
_COMMA_LIST = re.compile(r"[^\s,]+(?:,[^\s,]+)+")
_ALPHABET = string.ascii_lowercase
_WRAPPERS = "\"'`*"
_MULTI = ("brackets", "commas", "exclaim")
_COUNT_LETTERS = "abcdef"
_SINGLE = ("brackets", "exclaim")  # a one-item answer has nothing to separate by commas


def _main(kind: str, rng: random.Random) -> tuple[str, list[str]]:
    """The main instruction text and the answer items."""
    if kind == "reverse":
        words = sample(rng, WORDS, 2 + below(rng, 3))
        return "reverse: " + " ".join(words), words[::-1]
    if kind == "sort":
        letters = sample(rng, _ALPHABET, 3 + below(rng, 3))
        return "sort: " + " ".join(letters), sorted(letters)
    if kind == "upper":
        words = sample(rng, WORDS, 1 + below(rng, 3))
        return "upper: " + " ".join(words), [w.upper() for w in words]
    if kind == "count":
        # a random string over six letters, not a word of the list: (word, letter) pairs with a non-zero count are
        # only ~240 prompts, so the hash split left the training pool almost all zeros while the test split kept
        # its share of non-zero counts (a train/test mismatch); here counts 0-3 are common in every split
        token = "".join(_COUNT_LETTERS[below(rng, 6)] for _ in range(3 + below(rng, 4)))
        letter = _COUNT_LETTERS[below(rng, 6)]
        return f"count {letter}: {token}", [str(token.count(letter))]
    if kind == "repeat":
        token = "".join(_ALPHABET[below(rng, 26)] for _ in range(2 + below(rng, 3)))
        times = 2 + below(rng, 3)
        return f"repeat {times}: {token}", [token] * times
    raise ValueError(f"unknown instruction kind {kind!r}")


def render(items: list[str], fmt: str | None) -> str:
    """The answer: items joined by spaces (by commas under ``commas``), then the format applied."""
    if fmt == "commas":
        return ",".join(items)
    text = " ".join(items)
    return f"[{text}]" if fmt == "brackets" else f"{text}!" if fmt == "exclaim" else text


def undo_format(text: str) -> str:
    """The content of a response with any format undone (trailing ``!``, surrounding brackets, commas)."""
    text = text.rstrip("!")
    if len(text) >= 2 and text[0] == "[" and text[-1] == "]":
        text = text[1:-1]
    return _COMMA.sub(" ", text)


def follows_main(items: list[str], response: str) -> bool:
    return undo_format(response) == " ".join(items)


def follows_format(fmt: str, response: str) -> bool:
    if fmt == "brackets":
        return len(response) >= 2 and response[0] == "[" and response[-1] == "]"
    if fmt == "commas":
        return _COMMA_LIST.fullmatch(response) is not None
    if fmt == "exclaim":
        return response.endswith("!")
    raise ValueError(f"unknown format {fmt!r}")


_TRANSFORMS: tuple[tuple[str, Callable[[str], str]], ...] = (
    ("collapse", lambda s: " ".join(s.split())),
    ("dot", lambda s: s[:-1].rstrip() if s.endswith(".") else s),
    ("wrappers", lambda s: s.strip(_WRAPPERS).strip()),
    ("lower", str.lower),
)


def loose_variants(response: str, lowercase: bool = True) -> list[str]:
    """Every combination of the loose transformations (module doc), the untouched response first."""
    out: list[str] = []
    for mask in itertools.product((False, True), repeat=len(_TRANSFORMS)):
        text = response
        for use, (name, fn) in zip(mask, _TRANSFORMS, strict=True):
            if use and (lowercase or name != "lower"):
                text = fn(text)
        if text not in out:
            out.append(text)
    return out


@register_task("world-ifeval")
class WorldIFEval(WorldTask):
    category = "instruction"
    version = 1
    source = "generator:world-ifeval (5 instructions x optional format: brackets / commas / end with !)"
    description = "world: IFEval-style verifiable instructions on short inputs, strict and loose accuracy"
    metrics = ("prompt_level_strict", "inst_level_strict", "prompt_level_loose", "inst_level_loose")
    primary_metric = "prompt_level_strict"
    train_size = 40000  # the largest share of the teacher's training data (the hardest task)
    generation = GenerationSpec(max_new_tokens=40, stop=("\n",))

    def draw(self, rng: random.Random) -> tuple[str, dict[str, Any]]:
        kind = KINDS[below(rng, len(KINDS))]
        text, items = _main(kind, rng)
        fmt = None
        if rng.random() < 0.5:
            formats = _MULTI if len(items) > 1 else _SINGLE
            fmt = formats[below(rng, len(formats))]
            text += f" | {FORMATS[fmt]}"
        return text, {"kind": kind, "format": fmt, "items": items}

    def answer(self, prompt: str, data: dict[str, Any]) -> str:
        return render(data["items"], data["format"])

    def followed(self, example: Example, completion: str, loose: bool) -> list[bool]:
        """Per instruction (main, then format if any): whether the completion follows it."""
        response = completion.strip()
        items, fmt = example.data["items"], example.data["format"]
        if loose:
            variants = loose_variants(response, lowercase=example.data["kind"] != "upper")
            all_variants = loose_variants(response)
        else:
            variants = all_variants = [response]
        out = [any(follows_main(items, v) for v in variants)]
        if fmt:
            out.append(any(follows_format(fmt, v) for v in all_variants))
        return out

    def score(self, example: Example, completion: str) -> Score:
        metrics = {}
        for level in ("strict", "loose"):
            followed = self.followed(example, completion, loose=level == "loose")
            metrics[f"prompt_level_{level}"] = float(all(followed))
            metrics[f"inst_level_{level}"] = sum(followed) / len(followed)
        return Score(metrics["prompt_level_strict"], metrics)
