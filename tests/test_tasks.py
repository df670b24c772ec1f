"""Contract tests over the whole task registry, plus registry discovery and training-prompt pools.

Per task: it loads (online tasks from a local fixture with the hub schema), its prompt renders and matches the
snapshot, a gold answer scores 1 and a junk answer scores 0. Regenerate snapshots after an intended prompt change
(and bump the task's version) with ``UPDATE_SNAPSHOTS=1 pytest tests/test_tasks.py``.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest

import tasks
from tasks import TASKS, TaskRegistryError, UnknownTaskError, discover, get_task, register_task
from tasks.base import CATEGORIES, Task, TaskDataError

FIXTURES = Path(__file__).parent / "fixtures"
#: hub tasks' data in their exact schemas (shared with `run --stand-in`)
HUB_FIXTURES = Path(__file__).resolve().parents[1] / "bench" / "stand_in_data"
SNAPSHOTS = FIXTURES / "prompt_snapshots.json"
NAMES = sorted(TASKS)
CHECKED = 3  # examples per task for gold/junk (code tasks run them in the sandbox)


def load(name: str) -> Task:
    task = get_task(name)
    if task.online:
        task.data_file = str(HUB_FIXTURES / f"{name}.jsonl")
    return task


def test_registry_is_populated():
    assert len(NAMES) >= 10
    assert {"instruction", "code", "math"} <= {TASKS[n].category for n in NAMES}


@pytest.mark.parametrize("name", NAMES)
def test_task_metadata(name):
    task = get_task(name)
    assert task.name == name
    assert task.category in CATEGORIES
    assert isinstance(task.version, int) and task.version >= 1
    assert task.source.split(":")[0] in {"package", "hub", "generator"}
    assert task.online == task.source.startswith("hub:")
    assert task.primary_metric in task.metrics or task.category == "code"
    assert task.description


@pytest.mark.parametrize("name", NAMES)
def test_task_loads_and_prompt_renders(name):
    task = load(name)
    examples = task.examples("test")
    assert len(examples) > 0
    ex = examples[0]
    messages = task.prompt(ex)
    assert messages and all(set(m) == {"role", "content"} and m["content"].strip() for m in messages)
    plain = task.plain_prompt(ex)
    raw = json.dumps(ex.data)
    for text in [plain, *(m["content"] for m in messages)]:
        assert "{{" not in text or "{{" in raw, "unrendered template braces"
        assert not re.search(r"\{(instruction|input|question|prompt|text|topic|w|k)\}", text), "unfilled placeholder"
    snapshot = json.loads(SNAPSHOTS.read_text()) if SNAPSHOTS.exists() else {}
    rendered = {"chat": messages, "plain": plain, "example_id": ex.id}
    if os.environ.get("UPDATE_SNAPSHOTS"):
        snapshot[name] = rendered
        SNAPSHOTS.write_text(json.dumps(snapshot, indent=1, sort_keys=True, ensure_ascii=False) + "\n")
    assert name in snapshot, f"no prompt snapshot for {name}; run UPDATE_SNAPSHOTS=1 pytest tests/test_tasks.py"
    assert rendered == snapshot[name], f"prompt of {name} changed: bump its version and update the snapshot"


@pytest.mark.parametrize("name", NAMES)
def test_gold_scores_one_and_junk_scores_zero(name):
    task = load(name)
    for ex in task.examples("test")[:CHECKED]:
        gold, junk = task.score_many(ex, [task.gold(ex), task.junk_completion])
        assert gold.value == 1.0, (ex.id, gold)
        assert junk.value == 0.0, (ex.id, junk)
        # pass@k and CIDEr-D are set-level metrics: only the aggregate has them
        assert (
            set(gold.metrics) >= {task.primary_metric}
            or task.category == "code"
            or task.primary_metric in getattr(task, "corpus_metrics", ())
        )


@pytest.mark.parametrize("name", [n for n in NAMES if "train" in TASKS[n].splits])
def test_train_split_is_disjoint_from_test(name):
    task = load(name)
    test_prompts = {task.prompt_text(ex) for ex in task.examples("test")}
    train = task.examples("train")
    assert train and not {task.prompt_text(ex) for ex in train} & test_prompts


@pytest.mark.parametrize("name", [n for n in NAMES if TASKS[n].online])
def test_online_task_without_hub_fails_in_one_line(name, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(TaskDataError, match=f"data_files={name}=PATH"):
        get_task(name).examples("test")


def test_offline_datasets_have_their_published_sizes():
    sizes = {"humaneval": 164, "math500": 311, "aime": 45, "cnmo": 18, "mtbench-ref": 30}
    assert {n: len(get_task(n).examples()) for n in sizes} == sizes
    assert 50 <= len(get_task("champ").examples()) <= 270


def test_unknown_task_lists_known_ones():
    with pytest.raises(UnknownTaskError, match="known tasks: .*humaneval"):
        get_task("no-such-task")


def test_duplicate_name_fails_loudly():
    with pytest.raises(TaskRegistryError, match="duplicate task name 'arith'"):

        @register_task("arith")
        class Again(Task):
            category = "math"


def test_broken_task_module_fails_loudly(tmp_path, monkeypatch):
    pkg = tmp_path / "brokentasks"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "good.py").write_text("X = 1\n")
    (pkg / "bad.py").write_text("raise RuntimeError('boom')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(TaskRegistryError, match="brokentasks.bad failed to import: RuntimeError: boom"):
        discover("brokentasks", [str(pkg)])


def test_bad_split_and_data_file_errors(tmp_path):
    with pytest.raises(TaskDataError, match="no split 'train'"):
        get_task("humaneval").examples("train")
    task = get_task("dolly")
    task.data_file = str(tmp_path / "missing.jsonl")
    with pytest.raises(TaskDataError, match="not found"):
        task.examples()
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    task = get_task("dolly")
    task.data_file = str(empty)
    with pytest.raises(TaskDataError, match="is empty"):
        task.examples()


def test_fingerprint_is_stable_and_data_dependent():
    a, b = get_task("arith"), get_task("arith")
    assert a.fingerprint() == b.fingerprint()
    assert a.fingerprint() != get_task("string-ops").fingerprint()


def test_prompt_pools_are_decontaminated():
    from tasks.prompts import POOLS, eval_ngrams, load_pool, ngrams

    grams, _ = eval_ngrams()
    for pool in (p for p in POOLS.values() if not p.online):
        rows = load_pool(pool.name)
        assert len(rows) >= 50, pool.name
        assert all(not (ngrams(r["text"]) & grams) for r in rows)
        assert rows[0]["prompt"][-1]["role"] == "user"
    assert {p.category for p in POOLS.values() if not p.online} >= {"instruction", "math", "code"}
    assert {"dolly-15k", "ultrachat-200k", "metamathqa", "evol-instruct-code"} <= set(POOLS)


def test_decontamination_drops_an_eval_prompt():
    from tasks.prompts import decontaminate

    problem = get_task("humaneval").examples()[0]
    leaked = "Please solve: " + get_task("humaneval").prompt_text(problem)
    assert decontaminate([leaked, "Tell me a story about a friendly dragon who learns to bake bread."]) == [
        False,
        True,
    ]


def test_package_is_importable_twice():
    assert tasks.TASKS is TASKS


def test_each_task_is_one_file_named_after_it_and_tasks_lists_it(capsys):
    from bench.cli import main
    from bench.cmd_tasks import task_file

    for name in TASKS:
        assert task_file(get_task(name)) == f"tasks/{name.replace('-', '_')}.py", name
    assert main(["tasks", "--no-count"]) == 0
    assert "tasks/world_code_sampled.py" in capsys.readouterr().out


def test_methods_and_losses_commands_list_every_registry_entry(capsys):
    from bench.cli import main
    from distill.losses import LOSSES
    from distill.methods import METHODS

    assert main(["methods"]) == 0
    out = capsys.readouterr().out
    assert all(name in out for name in METHODS) and "DistiLLM-2" in out and "T=0.8, top-p=0.95" in out
    assert main(["losses"]) == 0
    out = capsys.readouterr().out
    assert all(name in out for name in LOSSES) and "alpha=0.1" in out and "pairwise" in out


@pytest.mark.parametrize("command, keys", [
    ("train", ["optim.lr", "distillm.phi_init", "teacher.name", "method"]),
    ("run", ["train.token_budget", "eval.split", "prompts.n_val"]),
    ("eval", ["split", "protocol", "limit"]),
])  # fmt: skip
def test_help_config_lists_every_key_with_its_type_default_and_help(command, keys, capsys):
    from bench.cli import main

    assert main([command, "--help-config"]) == 0
    out = capsys.readouterr().out
    lines = {line.split()[0]: line for line in out.splitlines() if line.strip() and not line.startswith(("-", "key"))}
    for key in keys:
        assert key in lines, key
    if command != "train":
        assert "the tasks' split to score" in lines["eval.split" if command == "run" else "split"]


def test_help_config_shows_the_defaults_a_config_really_gets():
    """Nested sections show their field's own default instance, not their class's defaults."""
    from bench.suite import SuiteConfig
    from distill.config import config_reference
    from distill.train_config import TrainConfig

    suite = SuiteConfig()
    for key, _, default, _ in config_reference(SuiteConfig):
        value = suite
        for part in key.split("."):
            value = getattr(value, part)
        assert default == repr(value), key
    train = {k: d for k, _, d, _ in config_reference(TrainConfig)}
    assert train["teacher_sampling.temperature"] == "0.8" and train["student.prune_layers"] == "2"


def test_environment_errors_and_interrupts_end_in_one_line(monkeypatch, capsys):
    import errno

    import bench.cmd_tasks
    from bench.cli import main
    from bench.run import SuiteRun

    def full(*a, **k):
        raise OSError(errno.ENOSPC, "No space left on device", "/results/x/record.json")

    monkeypatch.setattr(bench.cmd_tasks, "task_rows", full)
    assert main(["tasks"]) == 2
    err = capsys.readouterr().err
    assert err == "distillm-bench tasks: error: No space left on device: /results/x/record.json\n"

    def interrupted(self, *a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(SuiteRun, "run", interrupted)
    assert main(["run", "world", "--until", "teacher"]) == 130
    err = capsys.readouterr().err  # (a first line may say which stages a cache already holds)
    last = err.rstrip("\n").split("\n")[-1]
    assert "Traceback" not in err and last.endswith("interrupted; rerun the same command to continue: finished stages "
                                                     "are kept")  # fmt: skip
