"""The benchmark orchestration: suites load, --plan works, the smoke suite survives a SIGKILL and resumes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from bench.run import SuiteRun
from bench.suite import SUITES_DIR, load_suite
from distill.config import ConfigError, load_config
from distill.train import TrainConfig

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = sorted(SUITES_DIR.glob("*.yaml"))
# a smaller smoke run for the tests: same stages, fewer of them
SMALL = [
    "methods=[kd,distillm2]",
    "teacher_train.examples_per_task=24",
    "teacher_train.epochs=2",
    "prompts.n_train=16",
    "prompts.n_heldout=8",
    "train.token_budget=120",
    "eval.tasks={arith: 4, tiny-func: 2}",
    "threads=1",  # fixed: the auto thread choice may differ between runs, and with it the low-order bits
]


def test_shipped_suites_exist():
    names = {p.stem for p in SHIPPED}
    assert {"world", "smollm2", "smoke", "paper-distillm-gpt2", "paper-distillm2-qwen2"} <= names


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.stem)
def test_every_shipped_suite_plans_and_its_train_overrides_validate(path, tmp_path, capsys):
    cfg = load_suite(str(path), [f"output_root={tmp_path}"])
    run = SuiteRun(cfg)
    plan = run.plan()
    names = [r["stage"] for r in plan]
    assert names[names.index("prompts") + 1] == "responses" and "init" in names
    assert len([n for n in names if n.startswith("train:")]) == len(cfg.methods) * len(cfg.seeds)
    assert len([n for n in names if n.startswith("eval:")]) == len(cfg.methods) * len(cfg.seeds) + 2
    assert all(r["status"] == "todo" and r["estimate_s"] > 0 for r in plan)
    for method in cfg.methods:  # the TrainConfig overrides every method will get are valid
        extra = [*cfg.train.overrides, *cfg.train.method_overrides.get(method, [])]
        load_config(TrainConfig, None, ["data.train_file=x.jsonl", f"method={method}", *extra])
    from bench.cli import main

    assert main(["run", str(path), "--plan", f"output_root={tmp_path}"]) == 0
    assert "estimated time" in capsys.readouterr().out


def test_suite_config_errors_are_one_line(tmp_path):
    with pytest.raises(ConfigError, match="unknown method"):
        load_suite("smoke", ["methods=[kd,minillm]"])
    with pytest.raises(FileNotFoundError, match="shipped suites: .*world"):
        load_suite("nosuch")
    with pytest.raises(ConfigError, match="unknown key 'train.tokens'"):
        load_suite("smoke", ["train.tokens=3"])


def test_suite_eval_settings_reach_every_task(tmp_path):
    """eval.max_new_tokens caps every task's generation (it once did not, and evals ran 10x longer)."""
    from bench.evaluate import resolve_tasks, task_spec

    run = SuiteRun(
        load_suite("smollm2", ["eval.max_new_tokens=17", "eval.tasks={arith: 3, humaneval: 3, math500: 1}"])
    )
    from bench.run_eval import eval_config

    cfg = eval_config(run, tmp_path, "some-model")
    assert cfg.tasks == ["arith", "humaneval", "math500"] and cfg.limits == {"arith": 3, "humaneval": 3, "math500": 1}
    assert cfg.max_length == run.cfg.eval.max_length and cfg.output_dir == str(tmp_path)
    tasks, _ = resolve_tasks(cfg)
    assert [task_spec(t, cfg).max_new_tokens for t in tasks] == [17, 17, 17]


def test_suite_training_keeps_each_methods_own_student_sampling():
    """The suite caps student generation length without replacing the method's sampling (it once made it greedy)."""
    from bench.stage_config import method_config, planned
    from distill.sampling import student_sampling as _student_sampling

    suite = load_suite("smollm2")
    cfg = method_config(suite, "distillm", 0, planned(suite))
    assert cfg.student_sampling is None  # the method's own
    sp = _student_sampling(cfg, 1000)
    assert sp.temperature == 1.0 and sp.max_new_tokens == suite.train.student_max_new_tokens


def test_run_id_is_content_addressed():
    a, b = load_suite("smoke"), load_suite("smoke", ["train.lr=2e-3"])
    assert a.resolved_run_id != b.resolved_run_id and a.resolved_run_id == load_suite("smoke").resolved_run_id
    ra, rb = SuiteRun(a), SuiteRun(b)
    key = {s.name: s.key for s in ra.stages}
    other = {s.name: s.key for s in rb.stages}
    assert key["prompts"] == other["prompts"] and key["init"] == other["init"]  # lr is not an input of these
    assert key["train:kd:s0"] != other["train:kd:s0"] and key["eval:kd:s0"] != other["eval:kd:s0"]


def _run(args, env=None):
    cmd = [sys.executable, "-m", "bench.cli", "run", "smoke", *args]
    return subprocess.run(
        cmd, cwd=ROOT, env={**os.environ, **(env or {})}, capture_output=True, text=True, timeout=900
    )


def _metrics(run_dir: Path) -> dict[str, dict]:
    return {p.stem: json.loads(p.read_text())["metrics"] for p in sorted((run_dir / "records").glob("*.json"))}


@pytest.mark.slow  # four smoke-suite subprocesses: ~100 s on an idle 2-core box
def test_smoke_suite_end_to_end_killed_and_resumed(tmp_path):
    args = [*SMALL, f"output_root={tmp_path / 'a'}"]
    killed = _run(args, env={"DISTILLM_FAULT_KILL_AFTER_STAGES": "6"})
    assert killed.returncode == -9, killed.stderr[-2000:]
    run_dir = next(p for p in (tmp_path / "a").iterdir() if p.name not in ("stages", "benchmarks"))  # the run
    done = sorted(p.parent.name for p in run_dir.glob("stages/*/done.json"))
    assert len(done) == 6
    resumed = _run(args)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert "6 of " in resumed.stderr and " stages already done" in resumed.stderr  # says what it resumed
    summary = json.loads((run_dir / "run_summary.json").read_text())
    assert len(summary["skipped"]) == 6 and len(summary["ran"]) == len(summary["skipped"] + summary["ran"]) - 6
    for name in (
        "leaderboard.md",
        "leaderboard.tex",
        "leaderboard.csv",
        "leaderboard.json",
        "cost.md",
        "training_curves.png",
        "leaderboard.png",
    ):
        assert (run_dir / name).is_file(), name
    # an uninterrupted run of the same suite gives the same records
    fresh = _run([*SMALL, f"output_root={tmp_path / 'b'}"])
    assert fresh.returncode == 0, fresh.stderr[-2000:]
    fresh_dir = next(p for p in (tmp_path / "b").iterdir() if p.name not in ("stages", "benchmarks"))
    assert fresh_dir.name == run_dir.name
    assert _metrics(fresh_dir) == _metrics(run_dir)
    assert len(_metrics(run_dir)) == 2 + 2 * 2  # teacher, init, 2 methods x 2 seeds
    # a rerun skips every stage; --force redoes one
    again = _run([*args, "--force", "eval:teacher"])
    assert again.returncode == 0
    summary = json.loads((run_dir / "run_summary.json").read_text())
    assert summary["ran"] == ["eval:teacher"] and _metrics(run_dir) == _metrics(fresh_dir)
