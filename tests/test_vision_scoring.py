"""Caption metrics (pycocoevalcap's CIDEr-D, BLEU-4, ROUGE-L), VQA accuracy with the official answer normalisation,
the `score caption` / `score vqa` commands and the `evaluate` metric modules."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from bench.cli import main
from tasks.vision_scoring import caption_example_scores, caption_scores, normalize_answer, ptb_tokenize, vqa_accuracy

ROOT = Path(__file__).resolve().parents[1]
PREDICTIONS = {"1": "A red circle on the left.", "2": "two blue squares", "3": "a green triangle at the top"}
REFERENCES = {
    "1": ["A red circle at the left.", "a red ball on the left side", "The red circle is on the left"],
    "2": ["Two blue squares.", "two squares, both blue", "a pair of blue squares"],
    "3": ["A green triangle near the top.", "green triangle, top", "a triangle that is green at the top"],
}


def test_caption_scores_equal_pycocoevalcaps_own_scorers_on_the_same_tokens():
    from pycocoevalcap.bleu.bleu import Bleu
    from pycocoevalcap.cider.cider import Cider
    from pycocoevalcap.rouge.rouge import Rouge

    got = caption_scores(PREDICTIONS, REFERENCES)
    res = {k: [ptb_tokenize(v)] for k, v in PREDICTIONS.items()}
    gts = {k: [ptb_tokenize(r) for r in refs] for k, refs in REFERENCES.items()}
    assert got["cider"] == Cider().compute_score(gts, res)[0]
    assert got["bleu4"] == Bleu(4).compute_score(gts, res, verbose=0)[0][3]
    assert got["rouge_l"] == Rouge().compute_score(gts, res)[0] and got["n"] == 3
    # a perfect caption set: BLEU-4 1 and ROUGE-L 1; CIDEr-D rewards consensus (> 0)
    perfect = caption_scores({k: v[0] for k, v in REFERENCES.items()}, REFERENCES)
    assert perfect["bleu4"] > got["bleu4"] and perfect["cider"] > got["cider"] and perfect["rouge_l"] > got["rouge_l"]
    assert caption_example_scores("", ["a red circle"]) == {"bleu4": 0.0, "rouge_l": 0.0}


def test_bleu4_on_a_hand_worked_case():
    """Every n-gram of "a b c d" is in the reference "a b c d e" (precisions 1), and the brevity penalty is
    exp(1 - 5/4): BLEU-4 = 0.7788 (pycocoevalcap adds a 1e-9 smoothing)."""
    import math

    got = caption_scores({"1": "a b c d"}, {"1": ["a b c d e"]})
    assert got["bleu4"] == pytest.approx(math.exp(1 - 5 / 4), rel=1e-6)
    assert caption_scores({"1": "a b c d e"}, {"1": ["a b c d e"]})["bleu4"] == pytest.approx(1.0, rel=1e-6)


def test_caption_tokenization_is_cocos():
    assert ptb_tokenize("A man's dog doesn't run, it's 3.5 m/s...") == "a man 's dog does n't run it 's 3.5 m/s"
    assert ptb_tokenize('Two "red" circles (left)!') == "two red circles -lrb- left -rrb-"
    if shutil.which("java"):  # COCO's own Stanford PTB tokenizer agrees where a JVM is at hand
        from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer

        texts = ["A man's dog doesn't run, it's 3.5 m/s...", "Two red circles (left) and a blue-green square!",
                 "The cat's toy isn't here; it's there."]  # fmt: skip
        theirs = PTBTokenizer().tokenize({str(i): [{"caption": t}] for i, t in enumerate(texts)})
        assert [theirs[str(i)][0] for i in range(len(texts))] == [ptb_tokenize(t) for t in texts]


@pytest.mark.parametrize(
    "agree, score", [(0, 0.0), (1, 0.3), (2, 0.6), (3, 0.9), (4, 1.0), (10, 1.0)]
)  # fmt: skip
def test_vqa_accuracy_is_the_mean_over_the_ten_leave_one_out_subsets(agree, score):
    """k of 10 annotators gave the prediction: each left-out annotator gives min(matches among the other 9 / 3, 1).
    k = 2: 2 subsets drop a match (1/3), 8 keep both (2/3): (2/3 + 16/3) / 10 = 0.6."""
    answers = ["cat"] * agree + ["dog"] * (10 - agree)
    assert vqa_accuracy("cat", answers) == pytest.approx(score)


@pytest.mark.parametrize(
    "raw, normal",
    [
        ("Two", "2"), ("none", "0"), ("The dog.", "dog"), ("an apple", "apple"), ("dont", "don't"),
        ("isnt it", "isn't it"), ("1,000", "1000"), ("yes!", "yes"), ("t-shirt", "t shirt"), ("3.5", "3.5"),
        ("  left\n", "left"), ("red , blue", "red blue"), ("twas", "'twas"), ("yall'd've", "y'all'd've"),
    ],
)  # fmt: skip
def test_vqa_answer_normalisation_follows_the_official_rules(raw, normal):
    assert normalize_answer(raw) == normal


def test_vqa_accuracy_normalises_prediction_and_answers():
    assert vqa_accuracy("Two.", ["2"] * 7 + ["two"] * 3) == 1.0  # number words, case, the final period
    assert vqa_accuracy("the red one", ["red 1"] * 10) == 1.0
    assert vqa_accuracy("blue", ["red"] * 10) == 0.0
    with pytest.raises(ValueError, match="needs the annotators' answers"):
        vqa_accuracy("x", [])


def _write(path: Path, rows: list[dict]) -> str:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def test_score_caption_and_vqa_commands(tmp_path, capsys):
    rows = [{"id": k, "prediction": v, "references": REFERENCES[k]} for k, v in PREDICTIONS.items()]
    assert main(["score", "caption", "--samples", _write(tmp_path / "c.jsonl", rows)]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out == pytest.approx(caption_scores(PREDICTIONS, REFERENCES)) and set(out) == {
        "cider",
        "bleu4",
        "rouge_l",
        "n",
    }
    vqa = [
        {"id": 1, "prediction": "two", "answers": ["2"] * 10},
        {"id": 2, "prediction": "red", "answers": ["red"] + ["blue"] * 9},
    ]
    assert main(["score", "vqa", "--samples", _write(tmp_path / "v.jsonl", vqa)]) == 0
    assert json.loads(capsys.readouterr().out) == {"vqa_accuracy": pytest.approx(0.65), "n": 2}


@pytest.mark.parametrize(
    "which, rows, needle",
    [
        ("caption", [{"id": 1, "prediction": "x"}], "row 1 needs 'id', 'prediction', 'references' (missing 'references')"),
        ("caption", [{"id": 1, "prediction": "x", "references": []}], "'references' must be a non-empty list"),
        ("vqa", [{"id": 1, "prediction": 3, "answers": ["3"]}], "'prediction' must be a string"),
        ("vqa", [{"id": 1, "prediction": "a", "answers": ["a"]}] * 2, "row 2: duplicate id 1"),
        ("vqa", [], "samples file is empty"),
    ],
)  # fmt: skip
def test_score_bad_samples_are_one_line_exit_2(which, rows, needle, tmp_path, capsys):
    assert main(["score", which, "--samples", _write(tmp_path / "s.jsonl", rows)]) == 2
    err = capsys.readouterr().err
    assert needle in err and err.count("\n") == 1


def test_the_metrics_load_through_evaluate_offline():
    import evaluate

    vqa = evaluate.load(str(ROOT / "metrics" / "vqa_accuracy"))
    assert vqa.compute(predictions=["two", "red"], references=[["2"] * 10, ["red"] + ["blue"] * 9]) == {
        "vqa_accuracy": pytest.approx(0.65), "n": 2}  # fmt: skip
    cap = evaluate.load(str(ROOT / "metrics" / "coco_caption"))
    ids = list(PREDICTIONS)
    got = cap.compute(predictions=[PREDICTIONS[k] for k in ids], references=[REFERENCES[k] for k in ids])
    assert got == pytest.approx(caption_scores(PREDICTIONS, REFERENCES))
