"""World pick: an open-ended answer. Name any listed word that starts with a given letter.

Prompt ``pick b: cat bat bus dog sun bee``: a letter and 5-7 distinct words from :data:`tasks.world.WORDS`, of
which 2-4 start with the letter (a draw whose prompt exceeds 40 characters is discarded). Every listed word that
starts with the letter is a right answer; the gold is one of them, chosen uniformly by a stable hash of the prompt.
Sampled 8 times at T=1, so that mode-seeking and mode-covering losses can differ measurably.

Metrics: ``valid`` (primary; per sample, the whitespace-stripped completion is a listed word starting with the
letter), averaged over samples then examples; ``distinct``: per example, the number of distinct valid answers
among its samples divided by ``min(samples, valid words)``, averaged over examples (with one sample it equals
``valid``).
"""

from __future__ import annotations

import random
import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from tasks import register_task
from tasks.base import Example, GenerationSpec, Score
from tasks.world import BY_LETTER, LETTERS, WORDS, WorldTask, below, sample, stable_choice

_OTHERS = {c: tuple(w for w in WORDS if w[0] != c) for c in LETTERS}


@dataclass(frozen=True)
class PickScore(Score):
    """A sample's score plus how many right answers its prompt has (for ``distinct``)."""

    n_valid: int = 1


@register_task("world-pick")
class WorldPick(WorldTask):
    category = "instruction"
    version = 1
    source = "generator:world-pick (a letter and 5-7 listed words, 2-4 of them valid)"
    description = "world: name any listed word starting with a letter (many right answers); validity and diversity"
    metrics = ("valid", "distinct")
    primary_metric = "valid"
    generation = GenerationSpec(max_new_tokens=12, temperature=1.0, n=8, stop=("\n",))

    def draw(self, rng: random.Random) -> tuple[str, dict[str, Any]]:
        letter = LETTERS[below(rng, len(LETTERS))]
        own = BY_LETTER[letter]
        n_valid = 2 + below(rng, min(4, len(own)) - 1)
        listed = sample(rng, own, n_valid) + sample(rng, _OTHERS[letter], 5 + below(rng, 3) - n_valid)
        listed = sample(rng, listed, len(listed))  # shuffled
        prompt = f"pick {letter}: " + " ".join(listed)
        valid = [w for w in listed if w[0] == letter]  # in prompt order
        return prompt, {"letter": letter, "words": listed, "valid": valid}

    def answer(self, prompt: str, data: dict[str, Any]) -> str:
        return stable_choice(f"world-pick-gold\x1f{prompt}", data["valid"])

    def score(self, example: Example, completion: str) -> Score:
        answer = completion.strip()
        value = float(answer in example.data["valid"])
        return PickScore(value, {"valid": value}, extracted=answer, n_valid=len(example.data["valid"]))

    def aggregate(self, scores: Sequence[Sequence[Score]]) -> dict[str, float]:
        groups = [g for g in scores if g]
        if not groups:
            return {}
        valid = statistics.fmean(statistics.fmean(s.metrics.get("valid", 0.0) for s in g) for g in groups)
        distinct = []
        for g in groups:
            answers = {s.extracted for s in g if s.metrics.get("valid", 0.0) == 1.0}
            n_valid = getattr(g[0], "n_valid", len(g))
            distinct.append(len(answers) / min(len(g), n_valid))
        return {"valid": valid, "distinct": statistics.fmean(distinct)}
