"""The shared stage store: runs link to stages stored by key, reuse each other's, adopt old run dirs, and gc."""

from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path

import pytest

from bench import store
from bench.run import SuiteRun
from distill.atomic import atomic_write_json


def _entry(root: Path, name: str, run: str | None = None) -> Path:
    """A finished store entry, linked from ``root/<run>`` if given."""
    entry = root / "stages" / name
    entry.mkdir(parents=True)
    (entry / "payload.bin").write_bytes(b"x" * 1000)
    atomic_write_json(entry / "done.json", {"stage": name, "model": str(entry / "final")})
    if run:
        store.link(root / run, entry)
    return entry


def test_link_is_relative_idempotent_and_resolves_to_the_entry(tmp_path):
    entry = _entry(tmp_path, "train-kd-s0-abc", run="world-1")
    at = tmp_path / "world-1" / "stages" / entry.name
    store.link(tmp_path / "world-1", entry)  # twice: no error, same link
    assert at.is_symlink() and not os.path.isabs(os.readlink(at)) and at.resolve() == entry.resolve()
    moved = tmp_path.parent / (tmp_path.name + "-moved")
    os.rename(tmp_path, moved)  # a relative link survives moving the whole output root
    try:
        assert (moved / "world-1" / "stages" / entry.name / "payload.bin").is_file()
    finally:
        os.rename(moved, tmp_path)


def test_gc_removes_only_entries_no_run_refers_to_and_keeps_one_being_computed(tmp_path):
    shared = _entry(tmp_path, "init-aaa", run="world-1")
    store.link(tmp_path / "world-2", shared)
    only_one = _entry(tmp_path, "train-kd-s0-bbb", run="world-1")
    orphan = _entry(tmp_path, "train-kd-s0-ccc")
    busy = _entry(tmp_path, "train-gkd-s0-ddd")
    with store.stage_lock(busy):
        removed, freed = store.gc(tmp_path, dry_run=True)
        assert removed == [orphan] and freed == 1000 + (orphan / "done.json").stat().st_size and orphan.is_dir()
        assert store.gc(tmp_path)[0] == [orphan] and not orphan.exists() and busy.is_dir()
    import shutil

    shutil.rmtree(tmp_path / "world-1")  # world-2 still refers to the shared init; nothing refers to only_one
    assert store.gc(tmp_path)[0] == [busy, only_one] and shared.is_dir()


def test_stage_lock_makes_a_second_run_wait_for_the_stage_being_computed(tmp_path):
    entry, order = tmp_path / "stages" / "teacher-abc", []

    def second() -> None:
        with store.stage_lock(entry):
            order.append("second")

    with store.stage_lock(entry):
        t = threading.Thread(target=second)
        t.start()
        time.sleep(0.3)
        order.append("first done")
    t.join(5)
    assert order == ["first done", "second"]


def test_a_run_dir_from_before_the_store_is_adopted_and_its_paths_rewritten(tmp_path):
    legacy = tmp_path / "world-1" / "stages" / "train-kd-s0-abc"
    (legacy / "train" / "final").mkdir(parents=True)
    atomic_write_json(legacy / "done.json", {"model": str(legacy / "train" / "final"), "seconds": 3.0})
    unfinished = tmp_path / "world-1" / "stages" / "train-gkd-s0-abc"
    unfinished.mkdir()
    entry = tmp_path / "stages" / legacy.name
    assert store.adopt(tmp_path / "world-1", entry)
    assert json.loads((entry / "done.json").read_text()) == {"model": str(entry / "train" / "final"), "seconds": 3.0}
    assert legacy.is_symlink() and (legacy / "train" / "final").is_dir()  # the old paths still resolve
    assert not store.adopt(tmp_path / "world-1", tmp_path / "stages" / unfinished.name)  # no done.json: left alone
    assert unfinished.is_dir() and not unfinished.is_symlink()
    # every run dir under the root at once, as a run does first: another suite's old stages become shared
    other = tmp_path / "smoke-2" / "stages" / "teacher-def"
    other.mkdir(parents=True)
    atomic_write_json(other / "done.json", {"model": str(other / "final")})
    assert store.adopt_all(tmp_path) == [tmp_path / "stages" / "teacher-def"] and other.is_symlink()
    assert store.adopt_all(tmp_path) == []


@pytest.mark.slow  # ~25 s: a tiny world suite, then a second suite that shares all but its eval stages
def test_a_second_suite_reuses_every_stage_it_shares_and_gc_keeps_them(tmp_path):
    from tests.test_world_suite import _suite

    first = SuiteRun(_suite(tmp_path, "methods=[sft]"))
    a = first.run(progress=False)
    assert a["skipped"] == [] and a["ran"]
    # a suite that differs in one eval setting: another run dir, every training stage reused
    second = SuiteRun(_suite(tmp_path, "methods=[sft]", "eval.tasks={world-arith: 2, world-pick: 1}"))
    assert second.run_dir != first.run_dir
    b = second.run(progress=False)
    assert not [s for s in b["ran"] if not s.startswith("eval:")] and "train:sft:s0" in b["skipped"]
    for name in ("teacher", "init", "train:sft:s0"):  # one entry, linked from both run dirs
        entry = second.by_name(name).dir(second.run_dir)
        for run in (first, second):
            link = run.run_dir / "stages" / entry.name
            assert link.is_symlink() and link.resolve() == entry.resolve()
    rec = json.loads((second.run_dir / "records" / "sft-s0.json").read_text())
    assert rec["run_id"] == second.cfg.resolved_run_id
    # the original suite again: nothing to do; its records are its own
    again = SuiteRun(_suite(tmp_path, "methods=[sft]")).run(progress=False)
    assert again["ran"] == []
    assert json.loads((first.run_dir / "records" / "sft-s0.json").read_text())["run_id"] == first.cfg.resolved_run_id
    assert store.gc(tmp_path)[0] == []  # every entry is referenced


@pytest.mark.slow  # ~40 s: a tiny world suite interrupted twice (Ctrl-C, then SIGKILL mid-training), resumed
def test_run_interrupted_by_ctrl_c_and_sigkill_resumes_to_the_uninterrupted_records(tmp_path):
    import subprocess
    import sys

    from bench.cli import main
    from tests.test_world_suite import TINY

    args = ["run", "world", f"output_root={tmp_path / 'cut'}", "cache_dir=" + str(tmp_path / "cache"), *TINY,
            "methods=[sft,gkd]"]  # fmt: skip
    os.environ["DISTILLM_FAULT_KILL_AFTER_STAGES"], os.environ["DISTILLM_FAULT_SIGNAL"] = "3", "SIGINT"
    try:
        assert main(args) == 130  # Ctrl-C after three stages
    finally:
        del os.environ["DISTILLM_FAULT_KILL_AFTER_STAGES"], os.environ["DISTILLM_FAULT_SIGNAL"]
    env = {**os.environ, "DISTILLM_FAULT_KILL_AT_STEP": "3", "HF_HUB_OFFLINE": "1"}  # SIGKILL inside a training
    killed = subprocess.run([sys.executable, "-m", "bench.cli", *args], env=env, capture_output=True, text=True)
    assert killed.returncode == -9, killed.stderr[-2000:]
    assert main(args) == 0
    whole = ["run", "world", f"output_root={tmp_path / 'whole'}", *args[3:]]
    assert main(whole) == 0

    def records(root: Path) -> dict:
        run_dir = next(p for p in root.iterdir() if p.name not in ("stages", "benchmarks"))  # not the store
        return {p.stem: json.loads(p.read_text())["metrics"] for p in (run_dir / "records").glob("*.json")}

    assert records(tmp_path / "cut") == records(tmp_path / "whole") and len(records(tmp_path / "whole")) == 4
