"""Smoke-sized string transforms (procedural): reverse / uppercase / first letters / repeat a short word.

Scored by exact match of the first line of the completion, whitespace-trimmed. Deterministic per (split,
version); the training split never repeats a test instruction."""

from __future__ import annotations

from tasks import register_task
from tasks.base import Example, GenerationSpec, Message, Score, Task, user
from tasks.sources import seeded_rng

WORDS = [
    "apple",
    "river",
    "stone",
    "cloud",
    "tiger",
    "lemon",
    "piano",
    "chair",
    "green",
    "house",
    "water",
    "light",
    "music",
    "paper",
    "smile",
    "dream",
    "bread",
    "ocean",
    "plant",
    "train",
    "north",
    "candy",
    "pencil",
    "robot",
    "mango",
    "tulip",
    "zebra",
    "violet",
    "maple",
    "otter",
    "cedar",
    "honey",
    "jelly",
    "kite",
    "lamp",
    "nest",
    "olive",
    "peach",
    "quilt",
    "rose",
    "sugar",
    "table",
    "umbrella",
    "vase",
    "wagon",
    "yarn",
    "acorn",
    "button",
    "cactus",
    "daisy",
    "eagle",
    "feather",
    "guitar",
    "harbor",
    "island",
    "jacket",
    "koala",
    "ladder",
    "meadow",
    "nickel",
    "orbit",
]
SIZES = {"test": 100, "train": 1000}

TRANSFORMS = {
    "reverse": ("Reverse the letters of the word '{w}'.", lambda w: w[::-1]),
    "upper": ("Write the word '{w}' in capital letters.", str.upper),
    "first": ("What is the first letter of the word '{w}'?", lambda w: w[0]),
    "last": ("What is the last letter of the word '{w}'?", lambda w: w[-1]),
    "double": ("Write the word '{w}' twice, separated by a space.", lambda w: f"{w} {w}"),
    "length": ("How many letters are in the word '{w}'?", lambda w: str(len(w))),
}


@register_task("string-ops")
class StringOps(Task):
    category = "instruction"
    version = 1
    source = "generator:string-ops (6 transforms x 61 words)"
    splits = ("test", "train")
    metrics = ("exact_match",)
    primary_metric = "exact_match"
    description = "smoke: string transforms of a word, exact match"
    generation = GenerationSpec(max_new_tokens=16, stop=("\n",))

    def load_examples(self, split: str) -> list[Example]:
        rng = seeded_rng(self.name, "test", 1)
        pool = [(t, w) for t in sorted(TRANSFORMS) for w in WORDS]
        rng.shuffle(pool)
        test = pool[: SIZES["test"]]
        items = test if split == "test" else pool[SIZES["test"] :]
        return [
            Example(
                id=f"{split}/{i}",
                data={"instruction": TRANSFORMS[t][0].format(w=w), "transform": t},
                target=TRANSFORMS[t][1](w),
            )
            for i, (t, w) in enumerate(items)
        ]

    def prompt(self, example: Example) -> list[Message]:
        return user(f"{example.data['instruction']} Reply with the answer only.")

    def plain_prompt(self, example: Example) -> str:
        return f"Instruction: {example.data['instruction']}\nAnswer:"

    def gold(self, example: Example) -> str:
        return f" {example.target}"

    def score(self, example: Example, completion: str) -> Score:
        lines = completion.strip().splitlines()
        answer = lines[0].strip().strip("'\".") if lines else ""
        value = float(answer == example.target)
        return Score(value=value, metrics={"exact_match": value}, extracted=answer)
