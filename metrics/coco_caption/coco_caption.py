"""COCO caption metrics as an ``evaluate`` module: ``evaluate.load("metrics/coco_caption")`` (offline, a local path).

CIDEr-D, BLEU-4 and ROUGE-L from pycocoevalcap on COCO's tokenization, exactly as ``distillm-bench score caption``
computes them (``tasks/vision_scoring.py``).
"""

import datasets
import evaluate

from tasks.vision_scoring import caption_scores

_DESCRIPTION = "CIDEr-D, BLEU-4 and ROUGE-L of one caption per example against its references (pycocoevalcap)."
_KWARGS = """
Args:
    predictions: list of str, one caption per example.
    references: list of list of str, the reference captions of each example.
Returns:
    cider, bleu4, rouge_l (corpus scores) and n.
"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS)
class CocoCaption(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation="Vedantam et al. 2015 (CIDEr); Papineni et al. 2002 (BLEU); Lin 2004 (ROUGE); Chen et al. 2015",
            inputs_description=_KWARGS,
            features=datasets.Features(
                {"predictions": datasets.Value("string"), "references": datasets.Sequence(datasets.Value("string"))}
            ),
        )

    def _compute(self, predictions, references):
        ids = [str(i) for i in range(len(predictions))]
        return caption_scores(dict(zip(ids, predictions, strict=True)), dict(zip(ids, references, strict=True)))
