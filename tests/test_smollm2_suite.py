"""The real-weights `smollm2` suite: recover a fake-quantised SmolLM2 with LoRA (DistiLLM-2 Table 9 setting).

The suite itself needs the SmolLM2 weights and ~10 CPU minutes; these tests check its config and stage graph without
running anything, and run a miniature of it end to end on tiny in-process models.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from bench.run import SuiteRun
from bench.suite import load_suite
from distill.config import load_config
from distill.train import TrainConfig

DEFAULT_METHODS = ["sft", "kd", "seqkd", "imitkd", "gkd", "distillm", "distillm2"]
# SmolLM2-135M: hidden 576, MLP 1536 (the in_features of every decoder linear)
SMOLLM2_IN_FEATURES = (576, 1536)

# The same suite on tiny models: the teacher is tiny-llama, the student its 4-bit g16 copy (tiny-llama's MLP is 160
# wide, so the suite's group of 32 would not divide it).
TINY = [
    "teacher.name=tiny-llama",
    "teacher.dtype=float32",
    "student.name=tiny-llama",
    "student.quantize_bits=4",
    "student.quantize_group=16",
    "prompts.n_train=8",
    "prompts.n_val=4",
    "prompts.n_heldout=4",
    "teacher_sampling.max_new_tokens=12",
    "methods=[sft,kd,gkd,distillm2]",
    "seeds=[0]",
    "train.token_budget=40",
    "train.student_max_new_tokens=12",
    "train.max_prompt_len=96",
    "train.max_len=128",
    "eval.tasks={ifeval-synth: 2, mtbench-ref: 1, arith: 2}",
    "eval.max_new_tokens=8",
    "eval.rouge_max_new_tokens=8",
    "eval.dtype=float32",
    "threads=1",
]


def test_suite_loads_with_a_quantised_student_lora_and_teacher_scored_tasks():
    cfg = load_suite("smollm2")
    assert cfg.name == "smollm2"
    assert cfg.teacher.name == cfg.student.name == "smollm2-135m-instruct" and cfg.teacher.dtype == "auto"
    assert cfg.student.quantize_bits == 3 and cfg.student.quantize_group == 32 and cfg.student.is_derived
    assert not cfg.student.is_pruned
    assert all(n % cfg.student.quantize_group == 0 for n in SMOLLM2_IN_FEATURES)
    assert not cfg.init.enabled  # the quantised model is the init: no SFT
    assert cfg.methods == DEFAULT_METHODS and len(cfg.seeds) == 2
    assert {"ifeval-synth", "mtbench-ref", "arith"} <= set(cfg.eval.tasks) and cfg.eval.pipeline_checks == []
    for method in cfg.methods:
        tc = load_config(TrainConfig, None, ["data.train_file=x.jsonl", f"method={method}", *cfg.train.overrides])
        assert tc.lora.enabled and tc.lora.r == 16 and tc.lora.target_modules == "all-linear"


def test_plan_builds_every_stage_runs_nothing_and_fits_ten_minutes(tmp_path, capsys):
    cfg = load_suite("smollm2", [f"output_root={tmp_path}"])
    run = SuiteRun(cfg)
    plan = run.plan()
    names = [r["stage"] for r in plan]
    assert names[:3] == ["prompts", "responses", "init"]
    assert [n for n in names if n.startswith("train:")] == [f"train:{m}:s{s}" for m in cfg.methods for s in cfg.seeds]
    assert len([n for n in names if n.startswith("eval:")]) == len(cfg.methods) * len(cfg.seeds) + 2
    assert all(r["status"] == "todo" and r["estimate_s"] > 0 for r in plan)
    assert sum(r["estimate_s"] for r in plan) <= 600
    from bench.cli import main

    assert main(["run", "smollm2", "--plan", f"output_root={tmp_path}"]) == 0
    assert "estimated time" in capsys.readouterr().out
    assert not any(tmp_path.iterdir())  # nothing ran, nothing was written


def _captured_config(run: SuiteRun, tmp_path: Path, stage) -> TrainConfig:
    """The TrainConfig a stage passes to the trainer, without training."""
    seen: list[TrainConfig] = []
    run.output = lambda name: {"train": "t.jsonl", "val": "v.jsonl", "heldout": "h.jsonl", "model": "/init/final",
                               "generations": "g"}  # fmt: skip
    run._train = lambda cfg: seen.append(cfg) or {}
    stage(tmp_path)
    return seen[0]


def test_init_saves_the_raw_quantised_student_and_methods_train_lora_on_it(tmp_path):
    run = SuiteRun(load_suite("smollm2", [f"output_root={tmp_path}"]))
    init = _captured_config(run, tmp_path, run._run_init)
    assert init.student.quantize_bits == 3 and init.student.quantize_group == 32
    assert init.optim.max_steps == 1 and init.optim.lr <= 1e-12  # the one no-SFT step leaves the weights as they are
    assert not init.lora.enabled
    kd = _captured_config(run, tmp_path, run._trainer("kd", 0))
    # the methods start from the saved init, already quantised: no second quantisation
    assert kd.student.name == "/init/final" and kd.student.quantize_bits is None
    assert kd.lora.enabled and kd.optim.lr == 5e-4 and kd.optim.max_tokens == run.cfg.train.token_budget


def _weights(path: str) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(Path(path) / "model.safetensors"))


@pytest.mark.slow  # a whole mini suite: ~8 s idle, more under load
def test_mini_suite_end_to_end_on_tiny_models(tmp_path):
    from distill.models import ModelConfig, load_from_config

    run = SuiteRun(load_suite("smollm2", [f"output_root={tmp_path}", *TINY]))
    summary = run.run(progress=False)
    assert summary["records"] == 2 + 4
    records = {p.stem: json.loads(p.read_text()) for p in (run.run_dir / "records").glob("*.json")}
    assert set(records) == {"teacher", "student-init", "sft-s0", "kd-s0", "gkd-s0", "distillm2-s0"}
    for rec in records.values():
        assert {"ifeval-synth/inst_level_acc", "mtbench-ref/rougeL", "arith/accuracy", "fidelity/kl"} <= set(
            rec["metrics"]
        )
    # the init is the quantised student itself, unchanged by the no-SFT step
    init = _weights(run.output("init")["model"])
    fresh, _ = load_from_config(ModelConfig(name="tiny-llama", quantize_bits=4, quantize_group=16))
    for name, p in fresh.state_dict().items():
        if name in init:
            torch.testing.assert_close(init[name], p, rtol=0, atol=1e-9, msg=name)
    assert records["student-init"]["metrics"]["fidelity/kl"]["value"] > 0  # degraded against the teacher
    # LoRA was merged into the saved student: plain weights (no adapter keys) that moved off the init
    kd = _weights(run.output("train:kd:s0")["model"])
    assert not any("lora" in k for k in kd)
    key = "model.layers.0.self_attn.q_proj.weight"
    assert not torch.equal(kd[key], init[key])
    assert torch.equal(kd["model.embed_tokens.weight"], init["model.embed_tokens.weight"])  # LoRA: linears only
    assert run.output("train:kd:s0")["train"]["tokens"] >= 40


@pytest.mark.parametrize("bad", ["student.quantize_bits=1", "student.quantize_group=0"])
def test_bad_quantisation_settings_are_config_errors(bad):
    from distill.config import ConfigError

    with pytest.raises(ConfigError, match=bad.split(".")[1].split("=")[0]):
        load_suite("smollm2", [bad])
