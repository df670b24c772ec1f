"""Shared pure scorers: answer extraction and normalisation, exact match, ROUGE-L, pass@k, code extraction.

Math answers are extracted in this order: the last ``\\boxed{...}`` (or ``\\fbox``), the text after the last
``####``, an "answer is X" phrase, then the last number. Both prediction and gold are normalised (LaTeX
wrappers, ``\\frac``/``\\dfrac``, thousands separators, units in ``\\text{}``, degrees, percent, ``x =``) and
compared as exact rationals when both parse as numbers, else as normalised strings.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from fractions import Fraction
from functools import lru_cache

import numpy as np

# ----------------------------------------------------------------------------------------------- extraction

_NUMBER = re.compile(r"-?\d[\d,]*(?:\.\d+)?(?:/\d+)?|-?\.\d+")


def extract_boxed(text: str) -> str | None:
    """Content of the last ``\\boxed{...}`` / ``\\fbox{...}`` (balanced braces), or None."""
    start = max(text.rfind("\\boxed"), text.rfind("\\fbox"))
    if start < 0:
        return None
    i = text.find("{", start)
    if i < 0:
        tail = text[start:].split(maxsplit=1)  # "\boxed 5"
        return tail[1].split("$")[0].strip() if len(tail) > 1 else None
    depth = 0
    for j in range(i, len(text)):
        if text[j] == "{":
            depth += 1
        elif text[j] == "}":
            depth -= 1
            if depth == 0:
                return text[i + 1 : j].strip()
    return None


def extract_last_number(text: str) -> str | None:
    """The last number in ``text`` (commas kept for normalisation, fractions ``a/b`` kept), or None."""
    found = _NUMBER.findall(text)
    return found[-1].rstrip(".,") if found else None


def extract_answer(text: str) -> str | None:
    """Final answer of a math completion: boxed, then ``####``, then "answer is", then the last number."""
    boxed = extract_boxed(text)
    if boxed is not None:
        return boxed
    if "####" in text:
        tail = text.rsplit("####", 1)[1].strip().splitlines()
        if tail and tail[0].strip():
            return tail[0].strip()
    m = re.findall(r"answer is[:\s]*\$?([^\n$]+?)\$?(?:\.\s|\.$|\n|$)", text, flags=re.IGNORECASE)
    if m:
        return m[-1].strip()
    return extract_last_number(text)


# -------------------------------------------------------------------------------------------- normalisation

_UNIT_WORDS = r"(?:units?|degrees?|cm|m|km|inches|inch|feet|foot|ft|meters?|dollars?|cents?|hours?|minutes?|seconds?|days?|mph|sq)"


def _strip_braces_command(s: str, command: str) -> str:
    """Replace ``\\command{x}`` by ``x`` (balanced braces)."""
    key = "\\" + command + "{"
    while (i := s.find(key)) >= 0:
        depth, j = 0, i + len(key) - 1
        for j in range(i + len(key) - 1, len(s)):
            depth += {"{": 1, "}": -1}.get(s[j], 0)
            if depth == 0:
                break
        s = s[:i] + s[i + len(key) : j] + s[j + 1 :]
    return s


def _frac_to_slash(s: str) -> str:
    """``\\frac{a}{b}`` -> ``(a)/(b)`` for simple arguments; also ``\\frac12`` -> ``1/2``."""
    s = re.sub(r"\\[dt]?frac\s*(\d)\s*(\d)", r"\1/\2", s)
    pattern = re.compile(r"\\[dt]?frac\{([^{}]*)\}\{([^{}]*)\}")
    while True:
        new = pattern.sub(lambda m: _paren(m.group(1)) + "/" + _paren(m.group(2)), s)
        if new == s:
            return s
        s = new


def _paren(x: str) -> str:
    return x if re.fullmatch(r"-?[\w.]+", x) else f"({x})"


def normalize_math(answer: str) -> str:
    """Canonical string form of a math answer (see module docstring)."""
    s = answer.strip()
    s = s.replace("\\!", "").replace("\\,", "").replace("\\;", "").replace("\\ ", "")
    s = s.replace("\\left", "").replace("\\right", "").replace("\\displaystyle", "")
    s = re.sub(r"\\(?:text|textbf|mathrm|mbox)\{\s*" + _UNIT_WORDS + r"\s*\}", "", s)
    for cmd in ("text", "textbf", "mathrm", "mbox", "boxed"):
        s = _strip_braces_command(s, cmd)
    s = s.replace("^\\circ", "").replace("^{\\circ}", "").replace("\\circ", "").replace("°", "")
    s = s.replace("\\%", "").replace("%", "").replace("\\$", "").replace("$", "")
    s = re.sub(r"^\s*[a-zA-Z]\s*=\s*", "", s)  # "x = 5" -> "5"
    s = re.sub(r"\s+" + _UNIT_WORDS + r"\.?$", "", s)
    s = _frac_to_slash(s)
    s = s.replace("\\cdot", "*").replace("\\times", "*").replace("−", "-")
    s = re.sub(r"(\d),(\d{3})(?!\d)", r"\1\2", s)  # 1,000 -> 1000 (repeat for 1,000,000)
    s = re.sub(r"(\d),(\d{3})(?!\d)", r"\1\2", s)
    s = s.rstrip(".").strip()
    s = re.sub(r"\s+", "", s)
    if re.fullmatch(r"\{.*\}", s):
        s = s[1:-1]
    number = parse_number(s)
    if number is not None:
        return str(number.numerator) if number.denominator == 1 else f"{number.numerator}/{number.denominator}"
    return s


def parse_number(s: str) -> Fraction | None:
    """``s`` as an exact rational (``-3``, ``2.50``, ``7/2``, ``(7)/(2)``), else None."""
    s = s.strip().replace("(", "").replace(")", "") if re.fullmatch(r"\(?-?[\d.]+\)?/\(?[\d.]+\)?", s.strip()) else s
    if not re.fullmatch(r"-?(?:\d+(?:\.\d*)?|\.\d+)(?:/-?(?:\d+(?:\.\d*)?|\.\d+))?", s):
        return None
    try:
        num, _, den = s.partition("/")
        value = Fraction(num) / Fraction(den) if den else Fraction(num)
    except (ValueError, ZeroDivisionError):
        return None
    return value


def math_equal(prediction: str | None, gold: str) -> bool:
    """Exact (rational) equality for numbers, else equality of normalised strings."""
    if prediction is None:
        return False
    p, g = normalize_math(prediction), normalize_math(gold)
    if p == g:
        return True
    pn, gn = parse_number(p), parse_number(g)
    return pn is not None and gn is not None and pn == gn


def normalize_text(text: str) -> str:
    """Lowercase, drop punctuation and articles, collapse whitespace (SQuAD-style)."""
    text = text.lower()
    text = re.sub(r"[^\w\s]", " ", text)
    text = re.sub(r"\b(a|an|the)\b", " ", text)
    return " ".join(text.split())


def exact_match(prediction: str, gold: str) -> float:
    return float(normalize_text(prediction) == normalize_text(gold))


# ------------------------------------------------------------------------------------------------- ROUGE-L


@lru_cache(maxsize=1)
def _rouge_scorer():
    from rouge_score import rouge_scorer

    return rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True)


def rouge_l(prediction: str, references: Sequence[str]) -> float:
    """ROUGE-L F-measure in [0, 1], max over references (DistiLLM protocol; rouge-score with the stemmer)."""
    if not references:
        raise ValueError("rouge_l needs at least one reference")
    scorer = _rouge_scorer()
    return max(scorer.score(ref, prediction)["rougeL"].fmeasure for ref in references)


# ---------------------------------------------------------------------------------------------------- pass@k


def estimate_pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k (Chen et al. 2021): 1 - C(n-c, k) / C(n, k), computed as a stable product."""
    if not 0 <= c <= n or k < 1:
        raise ValueError(f"need 0 <= c <= n and k >= 1, got n={n}, c={c}, k={k}")
    if k > n:
        raise ValueError(f"pass@{k} needs at least {k} samples per problem, got {n}")
    if n - c < k:
        return 1.0
    return float(1.0 - np.prod(1.0 - k / np.arange(n - c + 1, n + 1)))


def pass_at_k(correct_per_problem: Sequence[Sequence[bool]], ks: Sequence[int]) -> dict[str, float]:
    """Mean pass@k over problems for each k that every problem has enough samples for."""
    out: dict[str, float] = {}
    for k in ks:
        if all(len(c) >= k for c in correct_per_problem) and correct_per_problem:
            values = [estimate_pass_at_k(len(c), sum(c), k) for c in correct_per_problem]
            out[f"pass@{k}"] = float(np.mean(values))
    return out


def mean_and_stderr(values: Sequence[float]) -> tuple[float, float]:
    if not values:
        return math.nan, math.nan
    arr = np.asarray(values, dtype=float)
    stderr = float(arr.std(ddof=1) / math.sqrt(len(arr))) if len(arr) > 1 else 0.0
    return float(arr.mean()), stderr


# ------------------------------------------------------------------------------------------------------ code

_FENCE = re.compile(r"```[ \t]*(?:python|py|Python)?[ \t]*\n(.*?)(?:```|$)", re.DOTALL)


def extract_code(prompt: str, completion: str, entry_point: str) -> str:
    """The program to test: the code a completion defines, joined to the prompt when it only continues it.

    * A fenced block (```python ... ```) is taken first (the one defining ``entry_point``, else the first).
    * If the code defines ``def entry_point`` itself it stands alone, with the prompt's imports prepended;
      otherwise it is a continuation of the prompt (completion-style HumanEval).
    """
    blocks = _FENCE.findall(completion)
    code = completion
    if blocks:
        defining = [b for b in blocks if re.search(rf"\bdef\s+{re.escape(entry_point)}\s*\(", b)]
        code = defining[0] if defining else blocks[0]
    if re.search(rf"^\s*def\s+{re.escape(entry_point)}\s*\(", code, flags=re.MULTILINE):
        imports = "\n".join(
            line for line in prompt.splitlines() if re.match(r"^(?:import|from)\s+\w", line) and line not in code
        )
        return (imports + "\n" + code) if imports else code
    return prompt + code
