"""VQA accuracy as an ``evaluate`` module: ``evaluate.load("metrics/vqa_accuracy")`` (offline, a local path).

The standard VQA accuracy with the official answer normalisation, exactly as ``distillm-bench score vqa`` computes
it (``tasks/vision_scoring.py``).
"""

from statistics import fmean

import datasets
import evaluate

from tasks.vision_scoring import vqa_accuracy

_DESCRIPTION = "VQA accuracy: min(#annotators who gave the answer / 3, 1), averaged over the 10-choose-9 subsets."
_KWARGS = """
Args:
    predictions: list of str, one answer per question.
    references: list of list of str, the annotators' answers (10 in VQA v2, OK-VQA and TextVQA).
Returns:
    vqa_accuracy (mean over questions) and n.
"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS)
class VqaAccuracy(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation="Antol et al. 2015, VQA: Visual Question Answering",
            inputs_description=_KWARGS,
            features=datasets.Features(
                {"predictions": datasets.Value("string"), "references": datasets.Sequence(datasets.Value("string"))}
            ),
        )

    def _compute(self, predictions, references):
        return {
            "vqa_accuracy": fmean(vqa_accuracy(p, r) for p, r in zip(predictions, references, strict=True)),
            "n": len(predictions),
        }
