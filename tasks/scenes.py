"""Infrastructure of the image world (registers no task): procedurally rendered scenes with their true captions and
question-answer pairs, for ``world-caption`` and ``world-vqa``.

A scene is a 2 × 2 grid of cells (top left, top right, bottom left, bottom right); 1 to 3 cells hold one shape
(circle, square, triangle) in one colour (red, green, blue, yellow), the rest are empty. :func:`render` draws it
as a :data:`SIZE` × :data:`SIZE` RGB image (white background, each shape inside its cell), a pure function of the
scene, so an example stores the scene, never pixels, and its hash does not depend on the machine.

* **Splits by scene.** ``split_of(key)`` of the scene's canonical key (as the text world splits by prompt), so a
  scene and every caption and question about it belong to exactly one split.
* **Captions.** The gold caption names the shapes in reading order ("a red circle at the top left and a blue square
  at the bottom right"); five phrasings of the same content are the references (CIDEr-D needs several).
* **Questions.** Counting ("how many shapes?"), shape at a position, colour of a unique shape, presence ("is
  there a green triangle?", half of them true) and position of a unique shape. Each has 10 annotator answers: the
  canonical answer, with some annotators writing it otherwise in a way the official VQA normalisation undoes
  (number words, articles, case), so the standard VQA accuracy of the canonical answer is 1.
"""

from __future__ import annotations

import random
from typing import Any

from tasks.base import Example, Message, Task, user
from tasks.world import below, sample, split_of

SIZE = 32  # image side in pixels: 2 x 2 cells of 16
CELLS = ("top left", "top right", "bottom left", "bottom right")
SHAPES = ("circle", "square", "triangle")
COLORS = {"red": (220, 30, 30), "green": (30, 170, 60), "blue": (30, 70, 220), "yellow": (235, 200, 20)}
NUMBER_WORDS = ("zero", "one", "two", "three")

Scene = tuple[tuple[str, str, str], ...]  # ((cell, colour, shape), ...) in cell order


def draw_scene(rng: random.Random) -> Scene:
    cells = sorted(sample(rng, range(len(CELLS)), 1 + below(rng, 3)))
    colors = tuple(COLORS)
    return tuple((CELLS[c], colors[below(rng, len(colors))], SHAPES[below(rng, len(SHAPES))]) for c in cells)


def key(scene: Scene) -> str:
    return ";".join(f"{cell}:{color} {shape}" for cell, color, shape in scene)


def scenes(split: str, n: int, stream: str = "scenes", version: int = 1) -> list[Scene]:
    """The first ``n`` distinct scenes of ``split`` (by the hash of their key) from a seeded stream."""
    from tasks.base import TaskDataError
    from tasks.sources import seeded_rng

    rng = seeded_rng(stream, split, version)
    seen: set[str] = set()
    out: list[Scene] = []
    for _ in range(200 * n + 10000):
        scene = draw_scene(rng)
        k = key(scene)
        if k in seen or split_of(k) != split:
            continue
        seen.add(k)
        out.append(scene)
        if len(out) == n:
            return out
    raise TaskDataError(f"image world: cannot draw {n} distinct {split!r} scenes (about 7.8k scenes exist)")


def render(scene: Scene):
    """The scene as a PIL RGB image."""
    from PIL import Image, ImageDraw

    img = Image.new("RGB", (SIZE, SIZE), (255, 255, 255))
    pen = ImageDraw.Draw(img)
    half, pad = SIZE // 2, 3
    for cell, color, shape in scene:
        i = CELLS.index(cell)
        x0, y0 = (i % 2) * half + pad, (i // 2) * half + pad
        x1, y1 = x0 + half - 2 * pad - 1, y0 + half - 2 * pad - 1
        rgb = COLORS[color]
        if shape == "circle":
            pen.ellipse((x0, y0, x1, y1), fill=rgb)
        elif shape == "square":
            pen.rectangle((x0 + 1, y0 + 1, x1 - 1, y1 - 1), fill=rgb)
        else:
            pen.polygon(((x0 + x1) / 2, y0, x1, y1, x0, y1), fill=rgb)
    return img


def _phrase(scene: Scene, at: str = "at the") -> list[str]:
    return [f"a {color} {shape} {at} {cell}" for cell, color, shape in scene]


def _join(parts: list[str]) -> str:
    return parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]


def captions(scene: Scene) -> list[str]:
    """The gold caption first, then four other phrasings of the same content."""
    n = len(scene)
    noun = "shape" if n == 1 else "shapes"
    return [
        _join(_phrase(scene)),
        "there is " + _join(_phrase(scene, "in the")),
        f"{NUMBER_WORDS[n]} {noun}: " + _join(_phrase(scene)),
        _join([f"{cell}: a {color} {shape}" for cell, color, shape in scene]),
        "a picture of " + _join([f"a {color} {shape} ({cell})" for cell, color, shape in scene]),
    ]


def _annotators(answer: str, variants: list[str], rng: random.Random) -> list[str]:
    """10 answers: the canonical one from at least 6 annotators, the others from its normalised-equal variants."""
    k = below(rng, 5) if variants else 0
    return [answer] * (10 - k) + [variants[below(rng, len(variants))] for _ in range(k)]


def questions(scene: Scene, rng: random.Random) -> list[dict[str, Any]]:
    """Every question kind that applies to ``scene``: ``{kind, question, answer, answers}``."""
    out = []
    n = len(scene)
    out.append(("count", "how many shapes are there?", str(n), [NUMBER_WORDS[n], NUMBER_WORDS[n].title()]))
    cell, color, shape = scene[below(rng, n)]
    out.append(("shape", f"what shape is at the {cell}?", shape, [f"a {shape}", f"the {shape}", shape.title()]))
    shapes = [s for _, _, s in scene]
    unique = [o for o in scene if shapes.count(o[2]) == 1]
    if unique:
        cell, color, shape = unique[below(rng, len(unique))]
        out.append(("color", f"what color is the {shape}?", color, [color.title(), f"{color}."]))
        out.append(("where", f"where is the {shape}?", cell, [f"the {cell}", cell.title(), f"{cell}."]))
    if rng.random() < 0.5:
        _, color, shape = scene[below(rng, n)]
        truth = "yes"
    else:
        color, shape = tuple(COLORS)[below(rng, len(COLORS))], SHAPES[below(rng, len(SHAPES))]
        truth = "yes" if any(c == color and s == shape for _, c, s in scene) else "no"
    out.append(("exists", f"is there a {color} {shape}?", truth, [truth.title(), f"{truth}!"]))
    return [
        {"kind": kind, "question": q, "answer": a, "answers": _annotators(a, variants, rng)}
        for kind, q, a, variants in out
    ]


def scene_data(scene: Scene) -> dict[str, Any]:
    return {"scene": [list(o) for o in scene], "scene_key": key(scene)}


def scene_of(data: dict[str, Any]) -> Scene:
    return tuple(tuple(o) for o in data["scene"])  # type: ignore[return-value]


class SceneTask(Task):
    """Base of the image world's tasks: the scene's image, then the task's text (:meth:`text`)."""

    needs_image = True
    splits = ("test", "val", "train")

    def text(self, example: Example) -> str:
        raise NotImplementedError

    def prompt(self, example: Example) -> list[Message]:
        return user(f"<image> {self.text(example)}")

    def plain_prompt(self, example: Example) -> str:
        return f"<image> {self.text(example)}\n"

    def image(self, example: Example) -> Any:
        return render(scene_of(example.data))
