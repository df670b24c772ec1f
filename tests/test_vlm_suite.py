"""The `vlm` suite end to end on tiny LLaVAs: images rendered into the stages, teacher responses conditioned on
them, every stage's image rows kept inside its own directory, and a leaderboard with caption and VQA columns."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench.run import SuiteRun
from bench.suite import load_suite

TINY = [
    "teacher.name=vlm-h32-l1-f64",
    "student.name=vlm-h32-l1-f32",
    "teacher_train.examples_per_task=24",
    "teacher_train.epochs=1",
    "prompts.n_train=24",
    "prompts.n_labelled=8",
    "prompts.n_val=8",
    "prompts.n_heldout=6",
    "init.epochs=1",
    "init.batch_size=4",
    "train.batch_size=4",
    "train.token_budget=400",
    "train.student_max_new_tokens=12",
    "teacher_sampling.max_new_tokens=12",
    "seeds=[0]",
    "methods=[kd,distillm2]",
    "eval.tasks={world-vqa: 6, world-caption: 4}",
    "eval.max_new_tokens=12",
    "eval.rouge_max_new_tokens=12",
]


def _jsonl(path) -> list[dict]:
    return [json.loads(x) for x in Path(path).read_text().splitlines() if x.strip()]


@pytest.mark.slow  # a whole tiny image-world suite: ~40 s
def test_the_vlm_suite_runs_end_to_end_with_its_images_inside_each_stage(tmp_path):
    run = SuiteRun(load_suite("vlm", [f"output_root={tmp_path}", f"cache_dir={tmp_path / 'cache'}", *TINY]))
    summary = run.run(progress=False)
    assert summary["records"] == 2 + 2
    for stage in ("prompts", "responses"):
        out = run.output(stage)
        d = Path(out["train"]).parent
        rows = _jsonl(out["train"])
        assert rows and all(r["image"].startswith("images/") and (d / r["image"]).is_file() for r in rows)
    gold = _jsonl(Path(run.output("teacher")["model"]).parent.parent / "gold.jsonl")
    assert any("image" in r for r in gold)
    lb = json.loads((run.run_dir / "leaderboard.json").read_text())
    keys = {c["key"] for c in lb["columns"]}
    assert {"world-vqa/vqa_accuracy", "world-caption/cider", "fidelity/kl"} <= keys
    categories = {c["key"]: c["category"] for c in lb["columns"]}
    assert categories["world-vqa/vqa_accuracy"] == "vqa" and categories["world-caption/cider"] == "caption"


def test_the_vlm_suite_plans_and_its_student_is_4x_smaller():
    from distill.models import load_model
    from distill.vision import vlm_non_embedding_params

    suite = load_suite("vlm", [])
    teacher, _ = load_model(suite.teacher.name)
    student, _ = load_model(suite.student.name)
    assert vlm_non_embedding_params(teacher) >= 4 * vlm_non_embedding_params(student)
    assert {"world-vqa", "world-caption"} == set(suite.eval.tasks)
    # teacher, prompts, responses, init; a training and an eval stage per method and seed; the teacher's and init's evals
    assert len(SuiteRun(suite).stages) == 4 + 2 * len(suite.methods) * len(suite.seeds) + 2


def test_an_image_pools_rows_keep_their_images_through_the_prompt_slices(tmp_path):
    """RLAIF-V's rows carry their image into the prompts stage's directory, each named by its content."""
    from bench.stage_images import render_images
    from tasks.prompts import prompt_slices

    fixture = Path(__file__).resolve().parents[1] / "bench" / "stand_in_data" / "rlaif-v.jsonl"
    slices = prompt_slices(["rlaif-v"], 16, 4, 4, 0, 0, {"rlaif-v": str(fixture)})
    written = {split: render_images(rows, tmp_path) for split, rows in slices.items() if rows}
    rows = [r for split in written.values() for r in split]
    assert rows and all(r["image"].startswith("images/rlaif-v-") and (tmp_path / r["image"]).is_file() for r in rows)
    assert len({r["image"] for r in written["train"]}) == len(written["train"])  # one file per distinct image
    assert not {r["image"] for r in written["train"]} & {r["image"] for r in written["heldout"]}
