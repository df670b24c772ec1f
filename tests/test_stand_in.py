"""``run SUITE --stand-in``: every paper suite rehearsed end to end on a CPU (tiny models of its architecture
classes, fixture data in the hub datasets' schemas, the engine code path in place of vLLM)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from bench.stand_in import DATA, stand_in, stand_in_arch
from bench.suite import SUITES_DIR, load_suite
from distill.config import ConfigError, load_config
from distill.methods import METHODS
from distill.train import TrainConfig

PAPER = sorted(p.stem for p in SUITES_DIR.glob("paper-*.yaml"))
ARCH = {"paper-distillm-gpt2": "gpt2", "paper-distillm2-qwen2": "qwen2", "paper-distillm2-math": "qwen2",
        "paper-distillm2-code": "llama", "paper-distillm2-vlm": "vlm"}  # fmt: skip
TINY = {"vlm": ("vlm-h64-l2-f128", "vlm-h32-l1-f64")}  # the tiny LLaVAs (one processor) standing in for LLaVA


def test_every_paper_suite_has_a_stand_in_that_keeps_its_methods_and_recipe():
    assert sorted(ARCH) == PAPER
    for name in PAPER:
        cfg = load_suite(name)
        s = stand_in(cfg)
        assert s.name == f"{name}-stand-in" and s.resolved_run_id.startswith(f"{name}-stand-in-")
        teacher, student = TINY.get(ARCH[name], (f"tiny-{ARCH[name]}-h64-l4", f"tiny-{ARCH[name]}-h32-l2"))
        assert s.teacher.name == teacher and s.student.name == student
        assert s.methods == cfg.methods and s.seeds == cfg.seeds and s.train.epochs == cfg.train.epochs
        assert s.train.lr == cfg.train.lr and s.train.method_overrides == cfg.train.method_overrides
        assert s.eval.tasks.keys() == cfg.eval.tasks.keys() and s.eval.protocol == cfg.eval.protocol
        assert s.eval.backend == "hf" and s.train.mixed_precision == "no"
        for pool in cfg.prompts.pools:  # every hub pool and hub task reads a fixture file
            assert Path(s.prompts.data_files[pool]).parent == DATA
        if any("gen_backend=vllm" in o for o in cfg.train.overrides):
            assert s.train.overrides[-1] == "gen_backend=hf-engine"
    with pytest.raises(ConfigError, match="no stand-in architecture for model 'mystery/model'"):
        stand_in_arch("mystery/model")


def test_the_fixtures_have_the_hub_datasets_exact_schemas():
    keys = {
        "dolly-15k": {"instruction", "context", "response", "category"},
        "ultrachat-200k": {"prompt", "prompt_id", "messages"},
        "metamathqa": {"type", "query", "original_question", "response"},
        "evol-instruct-code": {"instruction", "output"},
        "rlaif-v": {"ds_name", "image", "question", "chosen", "rejected", "origin_dataset", "origin_split", "idx",
                    "image_path"},
    }  # fmt: skip
    for name, want in keys.items():
        rows = [json.loads(x) for x in (DATA / f"{name}.jsonl").read_text().splitlines()]
        assert len(rows) >= 24 and all(set(r) == want for r in rows), name
    # the VQA sets (lmms-lab/OK-VQA val2014, lmms-lab/textvqa validation): their columns, images as {"path"}
    vqa = {
        "okvqa": {"question_id", "image", "question", "answers", "question_type", "answer_type"},
        "textvqa": {"image_id", "question_id", "question", "question_tokens", "image", "image_width", "image_height",
                    "flickr_original_url", "flickr_300k_url", "answers", "image_classes", "set_name", "ocr_tokens"},
    }  # fmt: skip
    for name, want in {**vqa, "rlaif-v": keys["rlaif-v"]}.items():
        rows = [json.loads(x) for x in (DATA / f"{name}.jsonl").read_text().splitlines()]
        assert all(set(r) == want and (DATA / r["image"]["path"]).is_file() for r in rows), name
        assert name == "rlaif-v" or all(len(r["answers"]) == 10 for r in rows)


@pytest.mark.slow  # four suites end to end: ~3 min on an idle 2-core box
@pytest.mark.parametrize("name", PAPER)
def test_a_paper_suite_runs_end_to_end_as_its_stand_in(name, tmp_path, monkeypatch):
    from bench.cli import main

    monkeypatch.setattr(sys, "argv", ["distillm-bench", "run", name, "--stand-in", f"output_root={tmp_path}",
                                      f"cache_dir={tmp_path / 'cache'}"])  # fmt: skip
    assert main() == 0
    (run_dir,) = [p for p in tmp_path.iterdir() if p.name.startswith(f"{name}-stand-in-")]
    lb = json.loads((run_dir / "leaderboard.json").read_text())
    cfg = load_suite(name)
    assert len(lb["rows"]) == 2 + len(cfg.methods) * len(cfg.seeds)  # teacher, init, every method and seed
    for method in cfg.methods:
        (train_dir,) = (tmp_path / "stages").glob(f"train-{method}-s*/train")
        tc = load_config(TrainConfig, train_dir / "config.yaml")
        summary = json.loads((train_dir / "summary.json").read_text())
        assert summary["steps"] >= 1
        assert tc.lora.enabled == any(o.startswith("lora.enabled=true") for o in cfg.train.overrides)
        on_policy = METHODS[method].sampler in ("on_policy", "adaptive", "batched")
        if tc.gen_backend == "hf-engine" and on_policy:  # the engine path ran: the merged snapshot, then syncs
            assert (train_dir / "engine-student-init" / "config.json").is_file() and summary["generation_s"] > 0
