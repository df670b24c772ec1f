"""Scorers of the image tasks: COCO caption metrics (CIDEr-D, BLEU-4, ROUGE-L) and VQA accuracy.

**Captions** are scored by ``pycocoevalcap``, the reference COCO caption evaluation: its ``Cider`` (CIDEr-D: tf-idf
n-grams up to 4, the Gaussian length penalty σ = 6, clipped counts, ×10), ``Bleu(4)`` (corpus BLEU-4 with the
closest-reference brevity penalty) and ``Rouge`` (ROUGE-L, β = 1.2, best reference). Nothing here re-implements
them. The text is tokenized first, as COCO's ``PTBTokenizer`` does: lower case, PTB word splitting (``n't``, ``'s``
... split off) and its punctuation tokens dropped. COCO runs the Stanford tokenizer through Java; ours is a Python
rendering of the same rules, so scores do not depend on a JVM, and on text with unusual tokens (URLs, emoticons)
it can split differently.

**VQA accuracy** is the standard one (Antol et al. 2015; the VQA challenge's evaluation): a prediction scores
``min(#annotators who gave it / 3, 1)``, averaged over the 10 subsets of 9 of the 10 annotators: an answer given
by 4 or more of 10 scores 1, by 3 scores 0.9, by 2 scores 0.6 and by 1 scores 0.3 (:func:`vqa_accuracy`). Answers and predictions are normalised with the official rules (:func:`normalize_answer`):
punctuation, periods not in numbers, lower case, number words to digits (``none``/``zero`` … ``ten``), articles
dropped, and the official contraction table. The official Python tool normalises the annotators' answers only
when they disagree; the challenge server (EvalAI) and lmms-eval normalise the prediction always. We normalise both
always, which only differs from the tool where all annotators agree on an answer that normalisation changes.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from statistics import fmean

# --------------------------------------------------------------------------- VQA answers

_PUNCT = (";", "/", "[", "]", '"', "{", "}", "(", ")", "=", "+", "\\", "_", "-", ">", "<", "@", "`", ",", "?", "!")
_PERIOD = re.compile(r"(?!<=\d)(\.)(?!\d)")  # the official pattern (its look-behind is really a look-ahead)
_COMMA_IN_NUMBER = re.compile(r"(\d)(,)(\d)")
_NUMBER_WORDS = {
    w: str(i)
    for i, w in enumerate(("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten"))
}
_NUMBER_WORDS["none"] = "0"
_ARTICLES = frozenset({"a", "an", "the"})
#: the official table's contractions; its keys are each form with one apostrophe left out
_CONTRACTED_TEXT = (
    "ain't aren't can't could've couldn't couldn't've didn't doesn't don't hadn't hadn't've hasn't haven't he'd "
    "he'd've he's how'd how'll how's isn't it'd it'd've it'll ma'am mightn't mightn't've might've mustn't must've "
    "needn't not've o'clock oughtn't 'ow's'at shan't she'd've should've shouldn't shouldn't've somebody'd've "
    "somebody'll somebody's someone'd someone'd've someone'll someone's something'd something'd've something'll "
    "that's there'd there'd've there're there's they'd they'd've they'll they're they've 'twas wasn't we'd've we've "
    "weren't what'll what're what's what've when's where'd where's where've who'd who'd've who'll who's who've "
    "why'll why're why's won't would've wouldn't wouldn't've y'all y'all'll y'all'd've you'd you'd've you'll you're "
    "you've"
)
_CONTRACTED = _CONTRACTED_TEXT.split()


def _contractions() -> dict[str, str]:
    table = {}
    for word in _CONTRACTED:
        for i, ch in enumerate(word):
            if ch == "'":
                table[word[:i] + word[i + 1 :]] = word
    table["somebody'd"] = "somebodyd"  # as in the official table (its one reversed entry)
    return table


CONTRACTIONS = _contractions()


def _punctuation(text: str) -> str:
    out = text
    for p in _PUNCT:
        if p + " " in text or " " + p in text or _COMMA_IN_NUMBER.search(text):
            out = out.replace(p, "")
        else:
            out = out.replace(p, " ")
    return _PERIOD.sub("", out, count=32)  # the official call passes re.UNICODE (32) as the count


def _digits_and_articles(text: str) -> str:
    words = [_NUMBER_WORDS.get(w, w) for w in text.lower().split()]
    return " ".join(CONTRACTIONS.get(w, w) for w in words if w not in _ARTICLES)


def normalize_answer(answer: str) -> str:
    """The official VQA answer normalisation: whitespace, punctuation, case, number words, articles, contractions."""
    return _digits_and_articles(_punctuation(answer.replace("\n", " ").replace("\t", " ").strip()))


def vqa_accuracy(prediction: str, answers: Sequence[str]) -> float:
    """VQA accuracy of one prediction against the annotators' answers (10 in VQA v2, OK-VQA and TextVQA):
    the mean over each annotator left out of ``min(#others who gave the prediction / 3, 1)``."""
    if not answers:
        raise ValueError("vqa_accuracy needs the annotators' answers (got none)")
    pred = normalize_answer(prediction)
    gold = [normalize_answer(a) for a in answers]
    scores = []
    for i in range(len(gold)):
        others = gold[:i] + gold[i + 1 :]
        scores.append(min(1.0, sum(a == pred for a in others) / 3.0))
    return fmean(scores)


# --------------------------------------------------------------------------- captions

# pycocoevalcap drops these tokens; its list also names -LRB- ... in upper case, which never match the lower-cased
# output, so brackets stay in as -lrb- ... (and so they do here)
_PTB_PUNCT = frozenset({"''", "'", "``", "`", '"', ".", "?", "!", ",", ":", "-", "--", "...", ";"})
_PTB_BRACKETS = {"(": "-lrb-", ")": "-rrb-", "[": "-lsb-", "]": "-rsb-", "{": "-lcb-", "}": "-rcb-"}
_PTB_SPLIT = re.compile(
    r"\w+(?=n't\b)|n't\b|'(?:s|re|ve|ll|d|m)\b|\.\.\.|--|\d+(?:[.,/:]\d+)+|\w+(?:[-/]\w+)*|[^\w\s]", re.UNICODE
)


def ptb_tokenize(text: str) -> str:
    """COCO's caption tokenization: lower case, PTB word splitting, punctuation tokens dropped; tokens joined by
    spaces (the form pycocoevalcap's scorers take)."""
    text = text.replace("\n", " ").replace("\t", " ").lower()
    tokens = [_PTB_BRACKETS.get(t, t) for t in _PTB_SPLIT.findall(text) if t not in _PTB_PUNCT]
    return " ".join(tokens)


def caption_scores(predictions: Mapping[str, str], references: Mapping[str, Sequence[str]]) -> dict[str, float]:
    """Corpus CIDEr-D, BLEU-4 and ROUGE-L (pycocoevalcap) of one prediction per id against its references."""
    from pycocoevalcap.bleu.bleu import Bleu
    from pycocoevalcap.cider.cider import Cider
    from pycocoevalcap.rouge.rouge import Rouge

    if not predictions:
        raise ValueError("no captions to score")
    missing = [k for k in predictions if not references.get(k)]
    if missing:
        raise ValueError(f"caption {missing[0]!r} has no references")
    res = {k: [ptb_tokenize(v)] for k, v in predictions.items()}
    gts = {k: [ptb_tokenize(r) for r in references[k]] for k in predictions}
    cider, _ = Cider().compute_score(gts, res)
    bleu, _ = Bleu(4).compute_score(gts, res, verbose=0)
    rouge, _ = Rouge().compute_score(gts, res)
    return {"cider": float(cider), "bleu4": float(bleu[3]), "rouge_l": float(rouge), "n": len(predictions)}


def caption_example_scores(prediction: str, references: Sequence[str]) -> dict[str, float]:
    """Per-example BLEU-4 and ROUGE-L (CIDEr-D's idf is a corpus statistic: it is only scored on a whole set)."""
    from pycocoevalcap.bleu.bleu import Bleu
    from pycocoevalcap.rouge.rouge import Rouge

    res, gts = {"0": [ptb_tokenize(prediction)]}, {"0": [ptb_tokenize(r) for r in references]}
    if not res["0"][0]:  # pycocoevalcap asserts on an empty hypothesis
        return {"bleu4": 0.0, "rouge_l": 0.0}
    bleu, _ = Bleu(4).compute_score(gts, res, verbose=0)
    rouge, _ = Rouge().compute_score(gts, res)
    return {"bleu4": float(bleu[3]), "rouge_l": float(rouge)}
