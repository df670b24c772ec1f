"""Hub VQA sets with 10 annotator answers per question (registers no task): the shared loader of ``okvqa`` and
``textvqa``, one file each.

Rows come from the hub (``lmms-lab/OK-VQA`` split ``val2014``; ``lmms-lab/textvqa`` split ``validation``), whose
``image`` column is an image, or from a local JSON/JSONL file with the same schema (``data_files=NAME=PATH``),
where ``image`` is ``{"path": ...}`` (relative to the file, as ``datasets`` writes an Image column out) or a path
string. Prompts follow LLaVA-1.5's evaluation: the image, the question, then "Answer the question using a single
word or phrase." Scored with the standard VQA accuracy (``tasks/vision_scoring.py``), greedy decoding.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

from tasks.base import Example, GenerationSpec, Message, Score, Task, TaskDataError, user
from tasks.sources import hub_rows, read_rows

SHORT_ANSWER = "Answer the question using a single word or phrase."


class HubVQATask(Task):
    """A VQA set (online only): a subclass sets ``source`` (``hub:<repo>``), ``hub_split`` and ``description``."""

    category = "vqa"
    online: ClassVar[bool] = True
    needs_image = True
    hub_split: ClassVar[str] = "validation"
    metrics = ("vqa_accuracy",)
    primary_metric = "vqa_accuracy"
    generation = GenerationSpec(max_new_tokens=16, stop=("\n",))

    def __init__(self, data_file: str | None = None) -> None:
        super().__init__(data_file)
        self._images: dict[str, Any] = {}

    def load_examples(self, split: str) -> list[Example]:
        repo = self.source.removeprefix("hub:")
        rows = read_rows(self.data_file) if self.data_file else hub_rows(self.name, repo, self.hub_split)
        base = Path(self.data_file).parent if self.data_file else None
        out = []
        for i, row in enumerate(rows):
            missing = [k for k in ("question_id", "question", "answers", "image") if k not in row]
            if missing:
                raise TaskDataError(f"task {self.name!r}: row {i + 1} of {self.source_in_use()} has no {missing[0]!r}")
            qid = str(row["question_id"])
            image = row["image"]
            if isinstance(image, dict):
                image = image.get("path")
            if isinstance(image, str):
                image = str((base / image) if base is not None and not Path(image).is_absolute() else image)
                ref = Path(image).name
            else:  # a PIL image from the hub
                ref = f"hub:{qid}"
            self._images[qid] = image
            answers = [str(a) for a in row["answers"]]
            out.append(Example(id=qid, data={"question": row["question"], "answers": answers, "image": ref},
                               target=max(set(answers), key=answers.count), references=tuple(answers)))  # fmt: skip
        return out

    def prompt(self, example: Example) -> list[Message]:
        return user(f"<image>\n{example.data['question']}\n{SHORT_ANSWER}")

    def plain_prompt(self, example: Example) -> str:
        return f"<image>\n{example.data['question']}\n{SHORT_ANSWER}\n"

    def prompt_text(self, example: Example) -> str:
        return example.data["question"]

    def image(self, example: Example) -> Any:
        from PIL import Image

        if example.id not in self._images:  # an example of this task, its rows not read by this instance yet
            self.examples("test")
        image = self._images[example.id]
        return Image.open(image).convert("RGB") if isinstance(image, str) else image.convert("RGB")

    def score(self, example: Example, completion: str) -> Score:
        from tasks.vision_scoring import vqa_accuracy

        answer = completion.strip()
        acc = vqa_accuracy(answer, example.data["answers"])
        return Score(acc, {"vqa_accuracy": acc}, extracted=answer)
