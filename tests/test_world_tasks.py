"""The controlled world's tasks (tasks/world*.py): generators, splits, checkers, batched code scoring, pools.

Fast by design: generation is in-process; the code checker's gold/corruption sweep runs every example's real
scoring program inside ONE sandboxed process; the per-process comparison uses a handful of candidates.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tasks import get_task
from tasks.world import (
    BY_LETTER,
    MAX_GOLD,
    MAX_GOLD_ARITH,
    MAX_PROMPT,
    SIZES,
    TRAIN_SIZE,
    WORDS,
    bucket,
    printable,
    split_of,
)
from tasks.world_arith import trace
from tasks.world_code import INPUTS, OPS, forms, reference
from tasks.world_ifeval import FORMATS, loose_variants, render

WORLD = ["world-arith", "world-ifeval", "world-code", "world-pick"]
ALL = [*WORLD, "world-code-sampled"]
SPLITS = ("test", "val", "train")
CHECKED_TRAIN = 2000
REPO = Path(__file__).resolve().parent.parent
_TASKS: dict = {}


def task(name: str):
    """One cached instance per task (the 20k-example train split is generated once per session)."""
    if name not in _TASKS:
        _TASKS[name] = get_task(name)
    return _TASKS[name]


def checked(name: str) -> list:
    """Every test and val example plus the first 2000 train examples."""
    t = task(name)
    return [*t.examples("test"), *t.examples("val"), *t.examples("train")[:CHECKED_TRAIN]]


# ----------------------------------------------------------------------------------------- generators, splits


def test_train_splits_have_their_sizes():
    """Generates (and caches, for the tests below) every world task's train split; first in the file."""
    for name in WORLD:
        assert len(task(name).examples("train")) == task(name).train_size >= TRAIN_SIZE


@pytest.mark.parametrize("name", WORLD)
def test_generation_is_deterministic(name):
    a, b = get_task(name), get_task(name)
    a.train_size = b.train_size = 2000  # a shorter train split is a prefix of the full one
    for split in SPLITS:
        assert [ex.to_json() for ex in a.examples(split)] == [ex.to_json() for ex in b.examples(split)]
        assert a.fingerprint(split) == b.fingerprint(split)
    full = task(name).examples("train")
    assert [ex.to_json() for ex in a.examples("train")] == [ex.to_json() for ex in full[:2000]]
    assert a.fingerprint("test") == task(name).fingerprint("test") != a.fingerprint("val")


def test_generation_is_the_same_in_another_process():
    code = (
        "import json; from tasks import get_task; "
        f"print(json.dumps({{n: get_task(n).fingerprint('test') for n in {WORLD!r}}}))"
    )
    env = {**os.environ, "PYTHONHASHSEED": "12345"}
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True, check=True)
    assert json.loads(out.stdout.strip().splitlines()[-1]) == {n: task(n).fingerprint("test") for n in WORLD}


def test_sampled_code_variant_shares_the_examples():
    assert get_task("world-code-sampled").fingerprint("test") == task("world-code").fingerprint("test")


@pytest.mark.parametrize("name", WORLD)
def test_splits_are_disjoint_by_prompt_hash_and_sized(name):
    t = task(name)
    prompts = {}
    for split in SPLITS:
        rows = t.examples(split)
        assert len(rows) == (t.train_size if split == "train" else SIZES[split])
        texts = [t.prompt_text(ex) for ex in rows]
        assert len(set(texts)) == len(texts), f"repeated prompt in {split}"
        assert all(split_of(p) == split for p in texts)
        prompts[split] = set(texts)
    assert not prompts["test"] & (prompts["val"] | prompts["train"])
    assert not prompts["val"] & prompts["train"]
    assert all(bucket(p) < 10 for p in prompts["test"]) and all(10 <= bucket(p) < 20 for p in prompts["val"])


@pytest.mark.parametrize("name", WORLD)
def test_characters_and_lengths(name):
    t = task(name)
    max_gold = MAX_GOLD_ARITH if name == "world-arith" else MAX_GOLD
    for split in SPLITS:
        for ex in t.examples(split):
            text, gold = t.prompt(ex)[-1]["content"], t.gold(ex)
            assert printable(text) and printable(gold), (ex.id, text, gold)
            assert printable(t.plain_prompt(ex))
            assert 0 < len(text) <= MAX_PROMPT and 0 < len(gold) <= max_gold, (ex.id, text, gold)
            assert gold == gold.strip()


# ----------------------------------------------------------------------------------------------- arithmetic


def test_arith_gold_passes_and_corruptions_fail():
    t = task("world-arith")
    for ex in checked("world-arith"):
        gold = t.gold(ex)
        assert t.score(ex, gold).metrics == {"accuracy": 1.0, "trace_acc": 1.0}, (ex.id, gold)
        assert t.score(ex, f"  {gold} ").value == 1.0
        steps, final = gold.rsplit(" =", 1)
        for delta in (-1, 1):
            s = t.score(ex, f"{steps} ={int(final) + delta}").metrics
            assert s == {"accuracy": 0.0, "trace_acc": 1.0}, (ex.id, s)
        first, *rest = steps.split()
        left, result = first.split("=")
        wrong = " ".join([f"{left}={int(result) + 1}", *rest]) + f" ={final}"
        assert t.score(ex, wrong).metrics == {"accuracy": 1.0, "trace_acc": 0.0}, (ex.id, wrong)
        assert t.score(ex, f"={final}").metrics == {"accuracy": 1.0, "trace_acc": 0.0}
        assert t.score(ex, " ".join(rest) + f" ={final}").metrics["trace_acc"] == 0.0  # a step missing


def test_arith_trace_must_follow_the_prompt():
    t = task("world-arith")
    for ex in t.examples("test")[:50]:
        start, ops = ex.data["start"], [(op, d) for op, d in ex.data["ops"]]
        (op, d), rest = ops[0], ops[1:]
        other = [(op, 1 + d % 9), *rest]  # another first digit: a correct, chained trace of another chain
        steps, final = trace(start, other)
        m = t.score(ex, " ".join(steps) + f" ={final}").metrics
        assert m["trace_acc"] == 0.0, (ex.id, steps)
        steps, final = trace(start + 1, ops)  # right operations from the wrong start
        assert t.score(ex, " ".join(steps) + f" ={final}").metrics["trace_acc"] == 0.0


@settings(max_examples=300, deadline=None, database=None)
@given(st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=126), max_size=50))
def test_arith_scorer_never_raises(completion):
    t = task("world-arith")
    s = t.score(t.examples("test")[0], completion)
    assert set(s.metrics.values()) <= {0.0, 1.0}


# ----------------------------------------------------------------------------------------------- instructions


def test_ifeval_gold_passes_and_corruptions_fail():
    t = task("world-ifeval")
    seen = set()
    for ex in checked("world-ifeval"):
        items, fmt, kind = ex.data["items"], ex.data["format"], ex.data["kind"]
        seen.add((kind, fmt))
        gold = t.gold(ex)
        assert set(t.score(ex, gold).metrics.values()) == {1.0}, (ex.id, gold)
        assert t.score(ex, f" {gold}  ").value == 1.0
        partial = 0.5 if fmt else 0.0  # the format instruction, when there is one, is still followed
        if len(set(items)) > 1:  # two items swapped
            swapped = [items[1], items[0], *items[2:]]
            m = t.score(ex, render(swapped, fmt)).metrics
            assert m["prompt_level_strict"] == m["prompt_level_loose"] == 0.0, (ex.id, m)
            assert m["inst_level_strict"] == m["inst_level_loose"] == partial, (ex.id, m)
        if kind == "upper":  # case sensitive even under the loose variants
            m = t.score(ex, gold.lower()).metrics
            assert m["prompt_level_loose"] == 0.0 and m["inst_level_loose"] == partial, (ex.id, m)
        elif gold.upper() != gold:  # wrong case: strict fails, loose (lowercased variant) passes
            m = t.score(ex, gold.upper()).metrics
            assert m["prompt_level_strict"] == 0.0 and m["inst_level_strict"] == partial, (ex.id, m)
            assert m["prompt_level_loose"] == 1.0, (ex.id, m)
        if fmt:  # format wrapper removed: the content still follows the main instruction
            m = t.score(ex, render(items, None)).metrics
            assert m["prompt_level_strict"] == m["prompt_level_loose"] == 0.0, (ex.id, m)
            assert m["inst_level_strict"] == m["inst_level_loose"] == 0.5, (ex.id, m)
    kinds = {"reverse", "sort", "upper", "count", "repeat"}
    assert {(k, None) for k in kinds} <= seen and {(k, "brackets") for k in kinds} <= seen
    assert ("count", "commas") not in seen  # one-item answers never get the comma format


def test_ifeval_loose_variants():
    t = task("world-ifeval")
    ex = next(e for e in t.examples("test") if e.data["kind"] == "reverse" and e.data["format"] is None)
    gold = t.gold(ex)
    for variant in (f'"{gold}"', f"`{gold}`", f"**{gold}**", f"{gold}.", gold.replace(" ", "  "), gold.title()):
        m = t.score(ex, variant).metrics
        assert m["prompt_level_strict"] == 0.0 and m["prompt_level_loose"] == 1.0, (variant, m)
    assert loose_variants("ab")[0] == "ab"
    assert "AB" in loose_variants("AB", lowercase=False) and "ab" not in loose_variants("AB", lowercase=False)


def test_ifeval_content_check_undoes_the_format():
    t = task("world-ifeval")
    ex = next(e for e in t.examples("test") if e.data["format"] == "commas")
    items = ex.data["items"]
    m = t.score(ex, "[" + ", ".join(items) + "]!").metrics  # right content, wrong format
    assert (m["prompt_level_strict"], m["inst_level_strict"]) == (0.0, 0.5)
    assert set(FORMATS) == {"brackets", "commas", "exclaim"}


@settings(max_examples=200, deadline=None, database=None)
@given(st.integers(0, 199), st.text(alphabet=st.sampled_from(' ,![]."*`abcdefgABCDEFG0123'), max_size=30))
def test_ifeval_loose_is_at_least_strict(i, noise):
    t = task("world-ifeval")
    ex = t.examples("test")[i]
    for completion in (noise, t.gold(ex) + noise, noise + t.gold(ex), t.gold(ex).upper() + noise[:2]):
        m = t.score(ex, completion).metrics
        assert m["prompt_level_loose"] >= m["prompt_level_strict"]
        assert m["inst_level_loose"] >= m["inst_level_strict"]
        assert m["prompt_level_strict"] <= m["inst_level_strict"]


# ---------------------------------------------------------------------------------------------------- code


def _corrupt_constant(ex, gold: str) -> str | None:
    """The gold with one constant changed so that its outputs on INPUTS change (None if no such change)."""
    body = gold.removeprefix("def f(x): return ")
    for m in re.finditer(r"\d", body):
        for d in "123456789":
            if d == m.group():
                continue
            changed = body[: m.start()] + d + body[m.end() :]
            if [eval(changed, {"x": x}) for x in INPUTS] != [reference(ex.data["ops"], x) for x in INPUTS]:  # noqa: S307
                return "def f(x): return " + changed
    return None


def test_code_gold_passes_and_corruptions_fail_in_the_sandbox():
    """Every checked example's real scoring program, with (gold, constant changed, syntax error), in ONE sandbox."""
    from tasks.sandbox import Limits, run_python

    t = task("world-code")
    programs, expected, unchanged = [], [], 0
    for ex in checked("world-code"):
        gold = t.gold(ex)
        cands = [gold, gold.replace("):", ")", 1)]
        corrupted = _corrupt_constant(ex, gold)
        if corrupted is None:
            unchanged += 1
        else:
            cands.append(corrupted)
        programs.append(t.batch_program(ex, cands))
        expected.append(["passed", "error: SyntaxError", *(["wrong answer"] if corrupted else [])])
    assert unchanged < len(programs) // 50
    wrapper = "import json, signal, sys\nPROGRAMS = " + repr(programs) + "\nfor _p in PROGRAMS:\n    exec(_p, {})\n"
    result = run_python(wrapper, Limits(timeout_s=120, output_bytes=8 << 20))
    assert result.passed, result.output[-500:]
    lines = [json.loads(line.split(" ", 1)[1]) for line in result.output.splitlines() if line.startswith("@@world")]
    assert lines == expected


def test_code_scorer_through_score_many():
    t = task("world-code")
    ex = t.examples("test")[0]
    gold = t.gold(ex)
    scores = t.score_many(ex, [gold, t.junk_completion, gold.replace("):", ")", 1), f"  {gold} "])
    assert [s.value for s in scores] == [1.0, 0.0, 0.0, 1.0]
    assert scores[0].metrics == {"pass@1": 1.0}


@settings(max_examples=120, deadline=None, database=None)
@given(
    st.lists(
        st.sampled_from(sorted(OPS)).flatmap(
            lambda op: st.tuples(st.just(op), st.none() if OPS[op] is None else st.sampled_from(list(OPS[op])))
        ),
        min_size=1,
        max_size=3,
    )
)
def test_every_code_form_is_equivalent(ops):
    ops = [list(o) for o in ops]
    written = forms(ops)
    assert written and len(written) == len(set(written))
    for form in written:
        fn = eval(f"lambda x: {form}")  # noqa: S307 - expressions built by the generator
        for x in range(-12, 13):
            value = fn(x)
            assert type(value) is int and value == reference(ops, x), (ops, form, x)


def test_code_gold_forms_vary():
    t = task("world-code")
    rows = t.examples("train")[:3000]
    other = sum(t.gold(ex) != "def f(x): return " + forms(ex.data["ops"])[0] for ex in rows)
    assert 0.3 * len(rows) < other < 0.9 * len(rows), other  # golds spread over the equivalent forms


def test_code_batched_equals_one_process_per_candidate():
    t = get_task("world-code")
    t.candidate_timeout_s = 0.2
    ex = t.examples("test")[1]
    gold = t.gold(ex)
    loop = "def f(x): return next(i for i in iter(int, 1) if i)"
    cands = [
        gold,
        loop,
        "def f(x) return x",
        "def g(x): return x",
        "def f(x): return x/1",
        t.junk_completion,
        gold,
        "def f(x): return 1//0",
    ]
    unique = list(dict.fromkeys(cands))
    batched = t.run_batched(ex, unique)
    assert batched is not None
    separate = t.run_separately(ex, unique)
    assert batched == separate
    assert batched[0] == "passed" and batched[1] == "timeout" and batched.count("passed") == 1
    assert [s.value for s in t.score_many(ex, cands)] == [1.0, 0, 0, 0, 0, 0, 1.0, 0]


def test_code_program_that_dies_falls_back_to_one_process_each():
    t = get_task("world-code")
    ex = t.examples("test")[2]
    gold = t.gold(ex)
    cands = [gold, "def f(x): return __import__('os')._exit(0)", "def f(x): return x"]
    assert t.run_batched(ex, cands) is None  # the interpreter exited before the results line
    scores = t.score_many(ex, cands)
    assert scores[0].value == 1.0 and scores[1].value == 0.0
    assert scores[2].value == float(all(reference(ex.data["ops"], x) == x for x in INPUTS))
    assert [s.detail for s in scores] == t.run_separately(ex, cands)


def test_code_pass_at_k_aggregation():
    t, s = task("world-code"), get_task("world-code-sampled")
    assert (t.generation.n, t.generation.temperature, t.primary_metric) == (1, 0.0, "pass@1")
    assert (s.generation.n, s.generation.temperature, s.primary_metric) == (5, 1.0, "pass@5")
    ex = t.examples("test")[0]
    scores = s.score_many(ex, [t.gold(ex), "x", "x", "x", "x"])
    agg = s.aggregate([scores])
    assert agg["pass@1"] == pytest.approx(0.2) and agg["pass@5"] == 1.0
    assert t.aggregate([scores[:1]]) == {"pass@1": 1.0}


# ---------------------------------------------------------------------------------------------------- pick


def test_pick_gold_passes_and_corruptions_fail():
    t = task("world-pick")
    golds_per_valid: dict[int, set] = {}
    for ex in checked("world-pick"):
        letter, words, valid = ex.data["letter"], ex.data["words"], ex.data["valid"]
        assert 5 <= len(words) <= 7 and len(set(words)) == len(words) and 2 <= len(valid) <= 4
        assert set(valid) == {w for w in words if w.startswith(letter)}
        gold = t.gold(ex)
        assert gold in valid and t.score(ex, f" {gold}\n").value == 1.0
        wrong_letter = next(w for w in words if not w.startswith(letter))
        unlisted = next(w for w in BY_LETTER[letter] if w not in words)
        stranger = next(w for w in WORDS if w not in words and not w.startswith(letter))
        for bad in (wrong_letter, unlisted, stranger, f"{gold} {gold}", gold.upper()):
            assert t.score(ex, bad).metrics == {"valid": 0.0}, (ex.id, bad)
        golds_per_valid.setdefault(len(valid), set()).add(valid.index(gold))
    assert all(len(positions) == n for n, positions in golds_per_valid.items())  # the gold is any valid word


def _pick_example(n_valid: int):
    return next(ex for ex in task("world-pick").examples("test") if len(ex.data["valid"]) == n_valid)


def test_pick_distinct():
    t = task("world-pick")
    ex3 = _pick_example(3)
    a, b, c = ex3.data["valid"]
    bad = next(w for w in ex3.data["words"] if w not in ex3.data["valid"])
    agg = t.aggregate([t.score_many(ex3, [a] * 8)])
    assert agg == {"valid": 1.0, "distinct": pytest.approx(1 / 3)}
    agg = t.aggregate([t.score_many(ex3, [a, b, bad, "zzz", a, b, bad, bad])])
    assert agg == {"valid": pytest.approx(0.5), "distinct": pytest.approx(2 / 3)}
    assert t.aggregate([t.score_many(ex3, [c, a])])["distinct"] == 1.0  # 2 samples: at most 2 distinct
    assert t.aggregate([t.score_many(ex3, [a])]) == {"valid": 1.0, "distinct": 1.0}  # greedy, n=1
    assert t.aggregate([t.score_many(ex3, [bad])]) == {"valid": 0.0, "distinct": 0.0}
    ex2 = _pick_example(2)
    two = t.score_many(ex2, [ex2.data["valid"][0]] * 8)
    agg = t.aggregate([t.score_many(ex3, [a, b, c, a, b, c, a, b]), two])  # mean over examples
    assert agg == {"valid": 1.0, "distinct": pytest.approx((1 + 1 / 2) / 2)}
    assert t.generation.n == 8 and t.generation.temperature == 1.0 and t.generation.max_new_tokens == 12


# ---------------------------------------------------------------------------------------------------- pools


def test_world_prompt_pools_carry_gold_and_read_val():
    from tasks.base import TaskDataError
    from tasks.prompts import POOLS, load_pool

    assert {POOLS[n].category for n in WORLD} == {"math", "instruction", "code"}
    assert all(POOLS[n].source == f"task:{n}/train" and not POOLS[n].online for n in WORLD)
    start = time.perf_counter()
    rows = load_pool("world-arith")
    elapsed = time.perf_counter() - start
    assert len(rows) == TRAIN_SIZE and elapsed < 10.0, elapsed
    t = task("world-arith")
    by_prompt = {ex.data["prompt"]: t.gold(ex) for ex in t.examples("train")}
    assert all(r["response"] == by_prompt[r["text"]] for r in rows)
    val = load_pool("world-pick", split="val", limit=50)
    assert len(val) == 50 and all(split_of(r["text"]) == "val" and r["response"] for r in val)
    assert load_pool("arith", limit=3)[0]["response"] is None  # other offline pools keep no gold
    with pytest.raises(TaskDataError, match="no split 'val'"):
        load_pool("arith", split="val")


# ------------------------------------------------------------------------------------------- through lm-eval


def test_world_tasks_run_through_lm_eval(tmp_path):
    """~5-10 s here (most of it importing lm-eval/transformers and building the tiny model)."""
    import torch

    from bench.evaluate import EvalConfig, run_eval

    before = torch.get_num_threads()
    torch.set_num_threads(1)  # two threads on a shared 2-core machine can be many times slower than one
    start = time.perf_counter()
    try:
        record = run_eval(
            EvalConfig(model="tiny-llama", tasks=ALL, limit=3, max_new_tokens=8, output_dir=str(tmp_path)),
            progress=False,
        )
    finally:
        torch.set_num_threads(before)
    elapsed = time.perf_counter() - start
    expected = {
        "world-arith": {"accuracy", "trace_acc"},
        "world-ifeval": {"prompt_level_strict", "inst_level_strict", "prompt_level_loose", "inst_level_loose"},
        "world-code": {"pass@1"},
        "world-code-sampled": {"pass@1", "pass@5"},
        "world-pick": {"valid", "distinct"},
    }
    for name, metrics in expected.items():
        scores = {k.split("/", 1)[1]: m.value for k, m in record.metrics.items() if k.startswith(f"{name}/")}
        assert metrics <= set(scores), (name, scores)
        assert all(0.0 <= scores[m] <= 1.0 for m in metrics), (name, scores)
        assert record.tasks[name].n == 3
    assert elapsed < 60, elapsed


def test_world_code_score_batch_matches_per_example_scoring_across_examples():
    """The eval runner scores all documents at once (one sandboxed program per core); same results as one by one."""
    task = get_task("world-code")
    examples = task.examples("test")[:6]
    completions = [[task.gold(ex), "def f(x): return 0", task.gold(ex)] for ex in examples]
    completions[0].insert(2, "def f(x):\n  while True: pass")  # one timeout (1 s each, in both paths)
    completions[2] = ["not python ("]
    batched = task.score_batch(examples, completions)
    single = [task.score_many(ex, comps) for ex, comps in zip(examples, completions, strict=True)]
    assert [[s.value for s in row] for row in batched] == [[s.value for s in row] for row in single]
    assert [s.value for s in batched[0]] == [1.0, 0.0, 0.0, 1.0] and batched[0][2].detail == "timeout"


def test_world_code_candidates_cannot_change_how_later_candidates_are_scored():
    """Batched scoring runs many examples' candidates in one process: a candidate that rebinds a builtin fails."""
    task = get_task("world-code")
    examples = task.examples("test")[:8]
    poison = "import builtins; builtins.all = lambda *a: True; builtins.type = lambda o: int; f = lambda x: 0"
    completions = [[poison]] + [["def f(x): return 12345"] for _ in examples[1:]]
    completions[3] = [task.gold(examples[3])]
    scores = task.score_batch(examples, completions)
    assert [row[0].value for row in scores] == [0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 0.0]
    assert scores[0][0].detail == "error: modified builtins"
