"""World caption: describe a rendered scene (``tasks/scenes.py``): which shapes, in which colours, where.

Prompt: the image and ``describe the image.``. The gold caption names the shapes in reading order; five phrasings
are the references. Metrics (pycocoevalcap, on COCO's tokenization; ``tasks/vision_scoring.py``): ``cider``
(CIDEr-D over the whole split, primary), ``bleu4`` (corpus BLEU-4) and ``rouge_l``. Greedy decoding, one sample.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from tasks import register_task
from tasks.base import Example, GenerationSpec, Score
from tasks.scenes import SceneTask, captions, scene_data, scenes

SIZES = {"test": 200, "val": 100, "train": 3000}
PROMPT = "describe the image."


@dataclass(frozen=True)
class CaptionScore(Score):
    """A caption's per-example scores and its references (CIDEr-D and corpus BLEU are computed over the set)."""

    references: tuple[str, ...] = ()


@register_task("world-caption")
class WorldCaption(SceneTask):
    category = "caption"
    version = 1
    source = "generator:scenes (2x2 grid, 1-3 coloured shapes, 32x32 px)"
    description = "image world: caption a rendered scene of coloured shapes (CIDEr-D, BLEU-4, ROUGE-L)"
    metrics = ("cider", "bleu4", "rouge_l")
    primary_metric = "cider"
    corpus_metrics = ("cider",)  # computed over the whole set (its idf), in aggregate() only
    generation = GenerationSpec(max_new_tokens=96, stop=("\n",))

    def load_examples(self, split: str) -> list[Example]:
        out = []
        for i, scene in enumerate(scenes(split, SIZES[split])):
            refs = captions(scene)
            out.append(Example(id=f"{split}/{i}", data=scene_data(scene), target=refs[0], references=tuple(refs)))
        return out

    def text(self, example: Example) -> str:
        return PROMPT

    def prompt_text(self, example: Example) -> str:
        return example.data["scene_key"]

    def score(self, example: Example, completion: str) -> Score:
        from tasks.vision_scoring import caption_example_scores

        text = completion.strip()
        m = caption_example_scores(text, example.references)
        # per example: BLEU-4 and ROUGE-L (the value); CIDEr-D's idf needs the whole set (aggregate)
        return CaptionScore(m["rouge_l"], m, extracted=text, references=example.references)

    def aggregate(self, scores: Sequence[Sequence[Score]]) -> dict[str, float]:
        """Corpus CIDEr-D, BLEU-4 and ROUGE-L over the examples' first samples."""
        from tasks.vision_scoring import caption_scores

        firsts = [g[0] for g in scores if g]
        if not firsts:
            return {}
        preds = {str(i): s.extracted or "" for i, s in enumerate(firsts)}
        refs = {str(i): list(getattr(s, "references", ())) for i, s in enumerate(firsts)}
        if not any(p.strip() for p in preds.values()):  # pycocoevalcap's BLEU cannot score an all-empty set
            return {"cider": 0.0, "bleu4": 0.0, "rouge_l": 0.0}
        out = caption_scores(preds, refs)
        return {"cider": out["cider"], "bleu4": out["bleu4"], "rouge_l": out["rouge_l"]}
