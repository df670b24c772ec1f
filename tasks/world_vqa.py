"""World VQA: answer a question about a rendered scene (``tasks/scenes.py``) in a word or two.

Questions: how many shapes, which shape is at a position, the colour or the position of a unique shape, whether
a given coloured shape is there. Each has 10 annotator answers (the canonical answer, some written otherwise in
ways the official normalisation undoes). Metrics: ``vqa_accuracy`` (the standard VQA accuracy,
``tasks/vision_scoring.py``; primary) and ``exact`` (the normalised answer equals the canonical one: the world's
exact attribute accuracy). Greedy decoding, one sample.
"""

from __future__ import annotations

from tasks import register_task
from tasks.base import Example, GenerationSpec, Score
from tasks.scenes import SceneTask, scene_data, scenes
from tasks.sources import seeded_rng

SIZES = {"test": 300, "val": 150, "train": 6000}


@register_task("world-vqa")
class WorldVQA(SceneTask):
    category = "vqa"
    version = 1
    source = "generator:scenes (count, shape, colour, position and presence questions, 10 answers each)"
    description = "image world: answer questions about a rendered scene (VQA accuracy, exact attribute accuracy)"
    metrics = ("vqa_accuracy", "exact")
    primary_metric = "vqa_accuracy"
    generation = GenerationSpec(max_new_tokens=16, stop=("\n",))

    def load_examples(self, split: str) -> list[Example]:
        from tasks.scenes import questions

        rng = seeded_rng("world-vqa-questions", split, self.version)
        out: list[Example] = []
        for scene in scenes(split, SIZES[split]):
            for q in questions(scene, rng):
                data = {**scene_data(scene), "question": q["question"], "kind": q["kind"], "answers": q["answers"]}
                out.append(
                    Example(id=f"{split}/{len(out)}", data=data, target=q["answer"], references=tuple(q["answers"]))
                )
                if len(out) == SIZES[split]:
                    return out
        return out

    def text(self, example: Example) -> str:
        return example.data["question"]

    def prompt_text(self, example: Example) -> str:
        return f"{example.data['scene_key']} {example.data['question']}"

    def score(self, example: Example, completion: str) -> Score:
        from tasks.vision_scoring import normalize_answer, vqa_accuracy

        answer = completion.strip()
        acc = vqa_accuracy(answer, example.data["answers"])
        exact = float(normalize_answer(answer) == normalize_answer(example.target))
        return Score(acc, {"vqa_accuracy": acc, "exact": exact}, extracted=answer)
