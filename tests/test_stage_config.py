"""The suite builds each training stage's TrainConfig typed (``bench/stage_config.py``), and keys it by its hash.

``tests/fixtures/suite_stage_configs.json`` pins the config of every training stage of every shipped suite. It was
first written from the old ``key=value`` path (suite -> strings -> ``load_config``), and the typed path reproduced it
exactly, except that the paper-distillm2 suites' teacher sampling now keeps its ``seed: 42`` (the strings dropped it).
Regenerate, after an intended change only, with ``UPDATE_STAGE_CONFIGS=1 pytest tests/test_stage_config.py``."""

from __future__ import annotations

import json
import os
from dataclasses import replace
from pathlib import Path

import pytest

from bench.run import SuiteRun
from bench.stage_config import config_key, init_config, method_config, planned, teacher_config
from bench.suite import SUITES_DIR, load_suite
from distill.config import ConfigError, config_to_dict
from distill.models import ModelConfig

PINNED = Path(__file__).parent / "fixtures" / "suite_stage_configs.json"


def _stage_configs() -> dict[str, dict]:
    out = {}
    for path in sorted(SUITES_DIR.glob("*.yaml")):
        suite = load_suite(str(path))
        inputs = planned(suite)
        if suite.teacher_train.enabled:
            out[f"{path.stem}/teacher"] = config_to_dict(teacher_config(suite, "@teacher:gold", "@stage"))
        out[f"{path.stem}/init"] = config_to_dict(init_config(suite, inputs))
        for m in suite.methods:
            for seed in suite.seeds:
                out[f"{path.stem}/train:{m}:s{seed}"] = config_to_dict(method_config(suite, m, seed, inputs))
    return out


def test_every_shipped_suites_stage_configs_are_pinned():
    got = _stage_configs()
    if os.environ.get("UPDATE_STAGE_CONFIGS"):
        PINNED.write_text("{\n" + ",\n".join(f"{json.dumps(k)}: {json.dumps(v, sort_keys=True)}"
                                             for k, v in sorted(got.items())) + "\n}\n")  # fmt: skip
        pytest.skip("fixture rewritten")
    pinned = json.loads(PINNED.read_text())
    assert sorted(got) == sorted(pinned)
    for name in pinned:
        assert json.loads(json.dumps(got[name])) == pinned[name], name


def test_the_teachers_model_config_reaches_the_trainer_whole():
    """The strings copied the teacher's name, dtype, prune_layers and cache_dir only: a pruned or quantised teacher
    (prune_layer_ids, prune_mlp, quantize_bits) was trained against as the full model."""
    suite = load_suite("smoke", ["teacher_train.enabled=false", "teacher.prune_layer_ids=[0]", "teacher.prune_mlp=16",
                                 "teacher.quantize_bits=4"])  # fmt: skip
    for cfg in (init_config(suite, planned(suite)), method_config(suite, "kd", 0, planned(suite))):
        assert cfg.teacher == suite.teacher and cfg.teacher.prune_layer_ids == [0] and cfg.teacher.quantize_bits == 4
    # and the teacher's sampling settings too (the strings kept max_new_tokens, temperature and top_p)
    suite = load_suite("smoke", ["teacher_sampling.seed=42", "teacher_sampling.top_k=7"])
    cfg = method_config(suite, "seqkd", 0, planned(suite))
    assert cfg.teacher_sampling == suite.teacher_sampling and cfg.teacher_sampling.seed == 42


def test_a_stage_key_is_the_hash_of_what_trains():
    base = SuiteRun(load_suite("smoke"))
    key = lambda run, name: run.by_name(name).key  # noqa: E731
    # a field that changes what trains changes the key of the stages it reaches, and only theirs
    lr = SuiteRun(load_suite("smoke", ["train.method_overrides={kd: [optim.weight_decay=0.1]}"]))
    assert key(lr, "train:kd:s0") != key(base, "train:kd:s0") and key(lr, "train:sft:s0") == key(base, "train:sft:s0")
    assert key(lr, "init") == key(base, "init")
    # the same config reached two ways is one stage: train.lr, or the method's own optim.lr
    a = SuiteRun(load_suite("smoke", ["train.lr=2e-3"]))
    b = SuiteRun(load_suite("smoke", ["train.method_overrides={kd: [optim.lr=2e-3]}"]))
    assert key(a, "train:kd:s0") == key(b, "train:kd:s0") != key(base, "train:kd:s0")
    # how a run is kept (checkpoint cadence, tensorboard) is not what it computes
    more = [*base.cfg.train.overrides, "save_every_min=1", "tensorboard=true", "keep_checkpoints=1"]
    kept = SuiteRun(replace(base.cfg, train=replace(base.cfg.train, overrides=more)))
    assert [s.key for s in kept.stages] == [s.key for s in base.stages]
    assert "output_dir" not in config_key(method_config(base.cfg, "kd", 0, planned(base.cfg)))


def test_the_stage_runs_the_keyed_config_with_the_real_paths(tmp_path):
    """What a stage runs differs from what its key hashed only in the paths earlier stages produced."""
    run = SuiteRun(load_suite("smoke"))
    outputs = {"responses": {"train": "r/train.jsonl", "val": "r/val.jsonl", "labelled": "r/lab.jsonl",
                             "generations": "r/generations"},
               "init": {"model": "i/final"}, "teacher": {"model": "t/final"}}  # fmt: skip
    run.output = outputs.__getitem__
    real = method_config(run.cfg, "kd", 1, run._inputs(tmp_path))
    keyed = method_config(run.cfg, "kd", 1, planned(run.cfg))
    assert (real.data.train_file, real.data.val_file, real.student.name) == ("r/train.jsonl", "r/val.jsonl", "i/final")
    assert real.teacher == ModelConfig(name="t/final", dtype=run.cfg.teacher.dtype)
    assert real.teacher_responses == "r/generations"  # the responses stage's samples, a file per epoch
    same_paths = replace(real, teacher=keyed.teacher, student=keyed.student, data=keyed.data,
                         output_dir=keyed.output_dir, teacher_responses=keyed.teacher_responses)  # fmt: skip
    assert config_to_dict(same_paths) == config_to_dict(keyed)


@pytest.mark.parametrize(
    ("override", "needle"),
    [
        ("train.overrides=[optim.lrr=1e-3]", "'optim.lrr'"),
        ("train.method_overrides={kd: [optim.schedule=cosinus]}", "optim.schedule"),
        ("teacher_train.overrides=[data.max_len=0]", "data.max_len"),
        ("train.overrides=[distillm2.beta0=2]", "beta0"),
    ],
)
def test_a_bad_value_anywhere_in_train_fails_when_the_suite_loads(override, needle):
    with pytest.raises(ConfigError, match=needle) as err:
        load_suite("smoke", [override])
    assert "\n" not in str(err.value)


def test_overrides_are_validated_once_after_the_typed_values():
    """An override may fix what the typed sections alone leave invalid: validating each intermediate config refused
    this suite (DistiLLM reads validation; the override turns it back on), which the trainer's own CLI accepts."""
    suite = load_suite("smoke", ["train.validation=off", "train.method_overrides={distillm: [validation=auto]}"])
    assert method_config(suite, "distillm", 0, planned(suite)).validation == "auto"


def test_the_responses_stage_key_follows_how_the_train_prompts_are_encoded():
    """Epoch 0 of the teacher's samples is written by the responses stage as the training stages encode the train
    prompts: a change of that encoding must reach its key (and not reuse responses cut at the old length)."""
    base = SuiteRun(load_suite("smoke")).by_name("responses").key
    for extra in (["train.max_len=160"], ["train.max_prompt_len=64"], ["train.overrides=[teacher_sampling.top_k=5]"]):
        assert SuiteRun(load_suite("smoke", extra)).by_name("responses").key != base, extra
    assert SuiteRun(load_suite("smoke", ["train.lr=1e-3"])).by_name("responses").key == base
