"""Verifiable instructions in the manner of IFEval (Zhou et al. 2023), generated deterministically.

Each prompt asks for a short text on a topic under 2-3 checkable constraints (keywords, forbidden word, word
count, letter case, no commas, bullet count, title, end phrase, postscript, quotation marks). Scores:
``prompt_level_acc`` (all constraints followed) and ``inst_level_acc`` (fraction followed, averaged over prompts).
Every prompt has at least one constraint an empty or junk answer fails. ``gold`` builds a response that follows
all of them (the contract tests check it scores 1).
"""

from __future__ import annotations

import random
import re
from typing import Any

from tasks import register_task
from tasks.base import Example, GenerationSpec, Message, Score, Task, user
from tasks.sources import seeded_rng

TOPICS = [
    "the ocean",
    "a city park",
    "winter mornings",
    "a bicycle trip",
    "learning to cook",
    "a lighthouse",
    "the night sky",
    "a small bakery",
    "mountain hiking",
    "a rainy afternoon",
    "an old library",
    "a garden in spring",
    "a train station",
    "a village market",
    "the desert",
    "a birthday party",
    "a snowstorm",
    "a fishing boat",
    "a music lesson",
    "a forest path",
    "a science fair",
    "a quiet cafe",
    "a summer festival",
    "a school bus",
    "a farm in autumn",
    "the first day of school",
    "a museum visit",
    "a camping night",
    "a chess game",
    "a busy kitchen",
]
FILLER = [
    "it",
    "is",
    "calm",
    "and",
    "bright",
    "with",
    "many",
    "small",
    "details",
    "to",
    "notice",
    "and",
    "enjoy",
    "each",
    "day",
    "brings",
    "something",
    "new",
    "to",
    "see",
    "people",
    "smile",
    "and",
    "talk",
    "while",
    "the",
    "air",
    "feels",
    "fresh",
    "and",
    "the",
    "light",
    "moves",
    "slowly",
    "across",
    "every",
    "corner",
]
KEYWORDS = ["blue", "gentle", "quiet", "golden", "happy", "simple", "warm", "wooden", "early", "busy"]
FORBIDDEN = ["very", "really", "amazing", "awesome", "nice"]  # never in FILLER or KEYWORDS
END_PHRASES = ("Is there anything else I can help with?", "That is all for now.", "Thank you for reading.")
POSITIVE = ("keywords", "min_words", "bullets", "title", "end_phrase", "postscript", "quotes", "uppercase")
CONFLICTS = [
    {"min_words", "max_words"},
    {"lowercase", "uppercase"},
    {"end_phrase", "postscript", "quotes"},
    {"lowercase", "end_phrase"},
    {"lowercase", "title"},
    {"lowercase", "postscript"},
    {"uppercase", "keywords"},
    {"uppercase", "end_phrase"},
    {"bullets", "quotes"},
]
SIZES = {"test": 100, "train": 3000}  # ~1/3 of train survives 13-gram decontamination


def _pick(rng: random.Random) -> list[dict[str, Any]]:
    kinds = [rng.choice(POSITIVE)]
    others = ["keywords", "forbidden", "min_words", "max_words", "lowercase", "uppercase", "no_commas", "bullets"]
    others += ["title", "end_phrase", "postscript", "quotes"]
    for kind in rng.sample(others, len(others)):
        if len(kinds) >= rng.choice((2, 3)):
            break
        if kind in kinds or any({kind, k} <= c for c in CONFLICTS for k in kinds):
            continue
        kinds.append(kind)
    params = {
        "keywords": lambda: {"words": rng.sample(KEYWORDS, 2)},
        "forbidden": lambda: {"word": rng.choice(FORBIDDEN)},
        "min_words": lambda: {"n": rng.choice((20, 30, 40))},
        "max_words": lambda: {"n": rng.choice((50, 60, 80))},
        "bullets": lambda: {"n": rng.choice((2, 3, 4))},
        "end_phrase": lambda: {"phrase": rng.choice(END_PHRASES)},
    }
    return [{"kind": k, **params.get(k, dict)()} for k in kinds]


def describe(c: dict[str, Any]) -> str:
    return {
        "keywords": lambda: f"Include the words '{c.get('words', ['', ''])[0]}' and '{c.get('words', ['', ''])[-1]}'.",
        "forbidden": lambda: f"Do not use the word '{c.get('word')}'.",
        "min_words": lambda: f"Use at least {c.get('n')} words.",
        "max_words": lambda: f"Use fewer than {c.get('n')} words.",
        "lowercase": lambda: "Write everything in lowercase letters, no capitals.",
        "uppercase": lambda: "Write everything in capital letters.",
        "no_commas": lambda: "Do not use any commas.",
        "bullets": lambda: f"Use exactly {c.get('n')} bullet points written as '* '.",
        "title": lambda: "Give it a title wrapped in double angular brackets, like <<my title>>.",
        "end_phrase": lambda: f"End your response with the exact phrase '{c.get('phrase')}'.",
        "postscript": lambda: "At the end, add a postscript starting with P.S.",
        "quotes": lambda: "Wrap your entire response in double quotation marks.",
    }[c["kind"]]()


def follows(c: dict[str, Any], text: str) -> bool:
    kind, stripped = c["kind"], text.strip()
    if kind == "keywords":
        return all(re.search(rf"\b{w}\b", text, re.IGNORECASE) for w in c["words"])
    if kind == "forbidden":
        return not re.search(rf"\b{c['word']}\b", text, re.IGNORECASE)
    if kind == "min_words":
        return len(text.split()) >= c["n"]
    if kind == "max_words":
        return len(text.split()) < c["n"]
    if kind == "lowercase":
        return text.islower()
    if kind == "uppercase":
        return text.isupper()
    if kind == "no_commas":
        return "," not in text
    if kind == "bullets":
        return len(re.findall(r"^\s*\*\s", text, flags=re.MULTILINE)) == c["n"]
    if kind == "title":
        return re.search(r"<<[^\n<>]+>>", text) is not None
    if kind == "end_phrase":
        return stripped.endswith(c["phrase"])
    if kind == "postscript":
        return re.search(r"(?:^|\n)\s*P\.\s?S\.", text, flags=re.IGNORECASE) is not None
    if kind == "quotes":
        return len(stripped) > 1 and stripped[0] == '"' and stripped[-1] == '"'
    raise ValueError(f"unknown instruction kind {kind!r}")


def build_gold(topic: str, constraints: list[dict[str, Any]]) -> str:
    """A response that follows every constraint (the checkers are the spec)."""
    by = {c["kind"]: c for c in constraints}
    n_words = by["min_words"]["n"] + 5 if "min_words" in by else 25
    if "max_words" in by:
        n_words = min(n_words, by["max_words"]["n"] - 20)
    words = [*topic.split(), *by.get("keywords", {}).get("words", []), *FILLER]
    body_words = (words * 3)[:n_words]
    if "bullets" in by:
        n = by["bullets"]["n"]
        size = max(1, len(body_words) // n)
        chunks = [body_words[i * size : (i + 1) * size if i < n - 1 else len(body_words)] for i in range(n)]
        body = "\n".join("* " + " ".join(chunk) for chunk in chunks)
    else:
        body = " ".join(body_words) + "."
    parts = [f"<<{topic}>>"] if "title" in by else []
    parts.append(body)
    if "postscript" in by:
        parts.append("P.S. see you soon.")
    if "end_phrase" in by:
        parts.append(by["end_phrase"]["phrase"])
    text = "\n".join(parts)
    if "uppercase" in by:
        text = text.upper()
    if "lowercase" in by:
        text = text.lower()
    if "quotes" in by:
        text = f'"{text}"'
    return text


@register_task("ifeval-synth")
class IFEvalSynth(Task):
    category = "instruction"
    version = 1
    source = "generator:ifeval-synth (30 topics x 12 verifiable constraint kinds)"
    splits = ("test", "train")
    metrics = ("prompt_level_acc", "inst_level_acc")
    primary_metric = "prompt_level_acc"
    description = "IFEval-style verifiable instructions, prompt- and instruction-level accuracy"
    generation = GenerationSpec(max_new_tokens=192)

    def load_examples(self, split: str) -> list[Example]:
        test = _make(self.name, "test", SIZES["test"], set())
        if split == "test":
            return test
        return _make(self.name, "train", SIZES["train"], {ex.data["instruction"] for ex in test})

    def prompt(self, example: Example) -> list[Message]:
        return user(example.data["instruction"])

    def gold(self, example: Example) -> str:
        return build_gold(example.data["topic"], example.data["constraints"])

    def score(self, example: Example, completion: str) -> Score:
        followed = [follows(c, completion) for c in example.data["constraints"]]
        prompt_level = float(all(followed))
        inst_level = sum(followed) / len(followed)
        return Score(prompt_level, {"prompt_level_acc": prompt_level, "inst_level_acc": inst_level})


def _make(name: str, split: str, n: int, exclude: set[str]) -> list[Example]:
    rng = seeded_rng(name, split, 1)
    out: list[Example] = []
    seen = set(exclude)
    while len(out) < n:
        topic = rng.choice(TOPICS)
        constraints = _pick(rng)
        text = f"Write a short text about {topic}. " + " ".join(describe(c) for c in constraints)
        if text in seen:
            continue
        seen.add(text)
        data = {"instruction": text, "topic": topic, "constraints": constraints}
        out.append(Example(id=f"{split}/{len(out)}", data=data))
    return out
