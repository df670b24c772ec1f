"""The controlled world's pipeline: its models, the cached teacher stage, the validation split, budgets and curves."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest
import torch

from bench.run import SuiteRun
from bench.suite import DEFAULT_SUITE, load_suite
from distill.config import load_config
from distill.models import load_model
from distill.schedules import lr_lambda as _lr_lambda
from distill.train import TrainConfig, train
from distill.world_model import non_embedding_params, parse_world_name, world_tokenizer

# A world suite small enough for a test: a 1-layer teacher, few prompts, tiny budgets, one thread (bit-reproducible).
TINY = [
    "teacher.name=world-h32-l1-f32",
    "student.name=world-h32-l1-f16",
    "teacher_train.examples_per_task=16",
    "teacher_train.batch_size=32",
    "prompts.n_train=24",
    "prompts.n_labelled=8",
    "prompts.n_val=8",
    "prompts.n_heldout=8",
    "init.epochs=1",
    "init.batch_size=4",
    "train.batch_size=4",
    "seeds=[0]",
    "train.token_budget=200",
    "train.curve_points=2",
    "eval.tasks={world-arith: 2, world-pick: 2}",
    "eval.not_averaged=[]",
    "eval.curve_tasks={world-arith: 1, world-pick: 1}",
    "threads=1",
]


def _suite(tmp_path: Path, *extra: str):
    return load_suite("world", [f"output_root={tmp_path}", "cache_dir=" + str(tmp_path / "cache"), *TINY, *extra])


def _sft(tmp_path: Path, rows: int, *extra: str) -> TrainConfig:
    """An SFT TrainConfig on ``rows`` synthetic examples, no validation, plus ``extra`` overrides."""
    from distill.synthetic import write_synthetic_data

    data = write_synthetic_data(tmp_path / "d.jsonl", rows)
    base = ["method=sft", f"data.train_file={data}", "data.val_fraction=0", "optim.batch_size=4", "validation=off"]
    return load_config(TrainConfig, None, [*base, *extra])


def _jsonl(path: str | Path) -> list[dict]:
    return [json.loads(x) for x in Path(path).read_text().splitlines() if x.strip()]


def test_world_is_the_default_suite_and_its_models_have_the_stated_sizes(tmp_path):
    assert DEFAULT_SUITE == "world" and load_suite(None).name == "world"
    cfg = load_suite("world")
    teacher, tok = load_model(cfg.teacher.name, cache_dir=tmp_path)
    student, _ = load_model(cfg.student.name, cache_dir=tmp_path)
    t, s = non_embedding_params(teacher), non_embedding_params(student)
    assert t / s >= 4, (t, s)  # the issue: at least 4x fewer non-embedding parameters
    assert len(tok) == 100 and tok.pad_token_id == 0 and tok.eos_token_id == 2


def test_world_tokenizer_is_one_token_per_character_with_a_chat_template():
    tok = world_tokenizer()
    text = "sum 3+4-2 =5 [a,b]!"
    ids = tok(text, add_special_tokens=False)["input_ids"]
    assert len(ids) == len(text) and tok.decode(ids) == text
    rendered = tok.apply_chat_template([{"role": "user", "content": "hi"}], tokenize=False, add_generation_prompt=True)
    assert rendered == "<bos><|user|>hi<|assistant|>"
    assert tok(rendered, add_special_tokens=False)["input_ids"] == [1, 3, *tok("hi")["input_ids"], 4]
    with pytest.raises(ValueError, match="bad world model name"):
        parse_world_name("world-128")


@pytest.fixture(scope="module")
def tiny_world(tmp_path_factory):
    """One whole tiny world run (every stage, SFT and DistiLLM, one seed, curves), shared by the tests below."""
    tmp_path = tmp_path_factory.mktemp("world")
    run = SuiteRun(_suite(tmp_path, "methods=[sft,distillm]"))
    summary = run.run(progress=False)
    return tmp_path, run, summary


def test_teacher_stage_is_content_addressed_and_skipped_on_rerun(tiny_world):
    tmp_path, run, summary = tiny_world
    assert summary["ran"][0] == "teacher"
    model_dir = Path(run.output("teacher")["model"])
    assert (model_dir / "model.safetensors").is_file() and (model_dir / "tokenizer.json").is_file()
    mtime = (model_dir / "model.safetensors").stat().st_mtime_ns
    again = SuiteRun(_suite(tmp_path, "methods=[sft,distillm]")).run(progress=False, until="teacher")
    assert again["ran"] == [] and again["skipped"] == ["teacher"]
    assert (model_dir / "model.safetensors").stat().st_mtime_ns == mtime
    # its key hashes the teacher's training config: a change retrains, an unrelated change does not
    other = SuiteRun(_suite(tmp_path, "teacher_train.lr=1e-3")).by_name("teacher")
    unrelated = SuiteRun(_suite(tmp_path, "train.lr=2e-3")).by_name("teacher")
    assert other.key != run.by_name("teacher").key and unrelated.key == run.by_name("teacher").key
    # the trained teacher is loaded by path like any other model
    model, tok = load_model(str(model_dir))
    assert model.config.hidden_size == 32 and len(tok) == 100


def test_distillms_schedule_never_sees_held_out_prompts_and_sft_sees_only_the_labelled_set(tiny_world):
    _, run, _ = tiny_world
    prompts = run.output("prompts")
    texts = {split: [json.dumps(r["prompt"]) for r in _jsonl(prompts[split])] for split in ("train", "val", "heldout")}
    assert not set(texts["val"]) & set(texts["heldout"]) and not set(texts["val"]) & set(texts["train"])
    # every evaluation prompt of the world's tasks is outside the validation split
    from tasks import get_task

    for name in ("world-arith", "world-ifeval", "world-code", "world-pick"):
        task = get_task(name)
        test_prompts = {json.dumps(task.prompt(ex)) for ex in task.examples("test")}
        assert not test_prompts & set(texts["val"])
    stage = Path(run.output("train:distillm:s0")["train"]["metrics"]).parent
    cfg = load_config(TrainConfig, stage / "config.yaml", [])
    assert cfg.data.val_file == run.output("responses")["val"]
    assert [json.dumps(r["prompt"]) for r in _jsonl(cfg.data.val_file)] == texts["val"]
    assert any("val_loss" in row for row in _jsonl(stage / "metrics.jsonl"))  # the schedule read it
    # SFT (and the init) train on the labelled ground truth only; distillation methods on the teacher's pool
    sft = load_config(TrainConfig, Path(run.output("train:sft:s0")["train"]["metrics"]).parent / "config.yaml", [])
    labelled = _jsonl(sft.data.train_file)
    assert sft.data.train_file == run.output("responses")["labelled"] and len(labelled) == 8
    gold = {json.dumps(r["prompt"]): r["response"] for r in _jsonl(prompts["labelled"])}
    assert all(gold[json.dumps(r["prompt"])] == r["response"] for r in labelled)
    assert cfg.data.train_file == run.output("responses")["train"] and len(_jsonl(cfg.data.train_file)) == 24


def test_records_carry_learning_curves_and_the_run_plots_them(tiny_world):
    _, run, summary = tiny_world
    records = {p.stem: json.loads(p.read_text()) for p in (run.run_dir / "records").glob("*.json")}
    assert [pt["tokens"] for pt in records["student-init"]["curve"]] == [0]
    curve = records["distillm-s0"]["curve"]
    assert len(curve) == 2 and 100 <= curve[0]["tokens"] < curve[1]["tokens"]  # the snapshot at 1/2, the end
    assert set(curve[0]["metrics"]) == {"world-arith/accuracy", "world-arith/trace_acc", "world-pick/valid",
                                        "world-pick/distinct"}  # fmt: skip
    assert "curve" not in records["teacher"]
    for name in ("learning_curves.png", "curves.csv", "leaderboard.md", "paired.md", "cost.md", "separation.md"):
        assert (run.run_dir / name).is_file(), name
    assert summary["threads"]["mode"] == "fixed"
    assert any(p.endswith("world-throughput.json") for p in summary["outputs"])


def test_lr_schedule_decays_over_the_token_budget():
    cfg = load_config(
        TrainConfig,
        None,
        ["data.train_file=x.jsonl", "optim.schedule=cosine", "optim.min_lr_ratio=0.1", "optim.max_tokens=1000"],
    ).optim
    progress = {"p": 0.0}
    fn = _lr_lambda(cfg, total=10_000, budget_progress=lambda: progress["p"])
    assert fn(5) == pytest.approx(1.0)
    progress["p"] = 0.5
    assert fn(5) == pytest.approx(0.1 + 0.9 * 0.5)
    progress["p"] = 1.0
    assert fn(5) == pytest.approx(0.1)  # at the end of the budget, whatever the step count says
    assert _lr_lambda(cfg, total=10_000)(5) == pytest.approx(1.0, abs=1e-3)  # by steps it would barely move


def test_a_token_budget_run_ends_at_min_lr_and_snapshots_at_the_given_points(tmp_path):
    cfg = _sft(
        tmp_path,
        64,
        "optim.max_tokens=300",
        "optim.epochs=100",
        "optim.schedule=linear",
        "optim.min_lr_ratio=0.0",
        "snapshot_tokens=[100,200]",
        f"output_dir={tmp_path / 'out'}",
    )
    summary = train(cfg)
    rows = _jsonl(tmp_path / "out" / "metrics.jsonl")
    assert rows[-1]["lr"] < 0.15 * cfg.optim.lr  # decayed to (nearly) zero by the end of the budget
    snaps = summary["snapshots"]
    assert [s["tokens"] >= p for s, p in zip(snaps, (100, 200), strict=True)] == [True, True]
    assert all(Path(s["path"], "model.safetensors").is_file() for s in snaps)


def test_seqkd_reports_its_teacher_sampling_even_when_it_comes_from_the_cache(tmp_path):
    from distill.synthetic import write_synthetic_data as write_synthetic

    data = write_synthetic(tmp_path / "d.jsonl", 16)

    def run(seed: int) -> dict:
        cfg = load_config(
            TrainConfig,
            None,
            [
                "method=seqkd",
                f"data.train_file={data}",
                "data.val_fraction=0",
                "optim.max_steps=2",
                "optim.batch_size=4",
                "teacher_sampling.max_new_tokens=8",
                f"cache_dir={tmp_path / 'cache'}",
                f"output_dir={tmp_path / f'out{seed}'}",
                f"seed={seed}",
                "validation=off",
            ],
        )
        return train(cfg)

    first, second = run(0), run(1)
    assert first["setup_generation_s"] > 0
    assert second["setup_generation_s"] == pytest.approx(first["setup_generation_s"])  # replayed from the cache


def test_contention_calibration_picks_a_thread_count():
    from bench.contention import choose_threads

    before = torch.get_num_threads()
    try:
        choice = choose_threads(max_threads=2)
        assert choice.threads in (1, 2) and torch.get_num_threads() == choice.threads
        assert choice.as_dict()["ms_single"] > 0
    finally:
        torch.set_num_threads(before)


def test_length_grouped_batches_cover_the_epoch_and_pad_less():
    from distill.data import Row
    from distill.sampling import OfflineSampler, Plan

    rng = torch.Generator().manual_seed(0)
    lengths = torch.randint(5, 60, (1000,), generator=rng).tolist()
    rows = [Row([1] * 3, [2] * (n - 3)) for n in lengths]
    plan = Plan(16, 1, len(rows), 2, None, 1, 0)
    plain, grouped = OfflineSampler(plan, 0, rows), OfflineSampler(plan, 0, rows, group_by_length=True)
    for sampler in (plain, grouped):
        seen = [i for step in range(plan.steps_per_epoch) for mb in sampler.step_indices(step) for i in mb]
        assert len(seen) == len(set(seen)) == plan.steps_per_epoch * 16  # each example at most once per epoch

    def padding(sampler) -> int:
        steps = [sampler.step_indices(s)[0] for s in range(plan.steps_per_epoch)]
        return sum(max(lengths[i] for i in st) * len(st) - sum(lengths[i] for i in st) for st in steps)

    assert padding(grouped) < 0.2 * padding(plain)
    assert grouped.step_indices(3) == OfflineSampler(plan, 0, rows, group_by_length=True).step_indices(3)


def test_one_process_trains_at_different_precisions(tmp_path):
    """A suite trains its teacher in fp32 and may train methods in bf16, in one process (accelerate once refused)."""
    for i, precision in enumerate(("bf16", "no", "bf16")):
        cfg = _sft(tmp_path, 8, "optim.max_steps=1", f"mixed_precision={precision}", f"output_dir={tmp_path / str(i)}")
        assert train(cfg)["steps"] == 1


@pytest.mark.slow  # ~22 s: a teacher, an init and four training runs
def test_sweep_picks_each_methods_rate_on_the_val_split_and_shares_the_upstream_stages(tmp_path):
    from bench.sweep import run_sweep
    from tasks import get_task

    cfg = _suite(tmp_path, "methods=[sft,kd]", "train.method_overrides={kd: [optim.lr=9.0]}")
    result = run_sweep(cfg, [1e-2, 1e-3], progress=False)
    assert result["grid"] == [1e-3, 1e-2] and {r["method"] for r in result["rows"]} == {"sft", "kd"}
    for method in ("sft", "kd"):  # the best val Avg. (ties: the smaller rate)
        rows = [r for r in result["rows"] if r["method"] == method]
        best = max(r["val_avg"] for r in rows)
        assert result["chosen"][method] == min(r["lr"] for r in rows if r["val_avg"] == best)
    run_dir = Path(result["run_dir"])
    stages = sorted(p.name.rsplit("-", 1)[0] for p in (run_dir / "stages").iterdir())
    assert stages.count("teacher") == 1 and stages.count("init") == 1  # computed once for the whole grid
    assert stages.count("train-kd-s0") == 2  # one per rate: the suite's own optim.lr=9.0 for kd was dropped
    for cfg_file in (run_dir / "stages").glob("train-kd-s0-*/train/config.yaml"):
        assert load_config(TrainConfig, cfg_file, []).optim.lr in (1e-3, 1e-2)
    # scored on the val split only, without the fidelity metrics (which read the held-out prompts)
    rec = json.loads((run_dir / "records" / "kd-s0.json").read_text())
    assert rec["metrics"] and not any(k.startswith("fidelity/") for k in rec["metrics"])
    # each grid point's record is kept with its stage (records/ holds only the last grid point's)
    assert [(p / "record.json").is_file() for p in (run_dir / "stages").glob("eval-kd-s0-*")] == [True, True]
    task_rec = json.loads(next((run_dir / "stages").glob("eval-kd-s0-*/tasks/record.json")).read_text())
    for name, entry in task_rec["tasks"].items():
        assert entry["split"] == "val" and entry["data_sha256"] == get_task(name).fingerprint("val")
    md = (tmp_path / "benchmarks" / "world-sweep-0.2k.md").read_text()
    assert "val split" in md and "kd: [optim.lr=" in md and "Validation Avg. along training" in md


@pytest.mark.parametrize(
    "override, names",
    [
        ("train.overrides=[optim.lrr=1e-3]", ["train.overrides", "'optim.lrr'", "did you mean 'lr'"]),
        ("train.method_overrides={kd: [distillm.phi_inti=0.2]}", ["method_overrides.kd", "'distillm.phi_inti'"]),
        ("train.method_overrides={kdd: [optim.lr=1e-3]}", ["train.method_overrides", "unknown method ['kdd']"]),
        ("teacher_train.overrides=[data.max_lne=9]", ["teacher_train.overrides", "'data.max_lne'"]),
    ],
)
def test_a_typo_in_a_suites_trainer_overrides_fails_when_the_suite_loads(override, names):
    from distill.config import ConfigError

    with pytest.raises(ConfigError) as err:
        load_suite("world", [override])
    assert "\n" not in str(err.value) and all(n in str(err.value) for n in names), str(err.value)


def test_a_metrics_direction_comes_from_its_task():
    from bench.evaluate import task_metrics
    from bench.record import ModelRef, Record
    from bench.run_eval import suite_metrics
    from tasks.base import Task

    class Lengthy(Task):
        name, category, version, source = "lengthy", "instruction", 1, "generator:test"
        metrics = ("acc", "words")
        primary_metric = "acc"
        lower_is_better = ("words",)

    info = Lengthy().info()
    assert info["higher_is_better"] == {"acc": True, "words": False}
    metrics = task_metrics("lengthy", {"acc": 0.5, "words": 12.0, "acc_stderr": 0.1}, Lengthy())
    assert {k: m.value for k, m in metrics.items()} == {"lengthy/acc": 0.5, "lengthy/words": 12.0}
    assert metrics["lengthy/acc"].higher_is_better and not metrics["lengthy/words"].higher_is_better
    assert metrics["lengthy/acc"].primary and not metrics["lengthy/words"].primary
    assert metrics["lengthy/acc"].category == "instruction"
    # the suite's eval.pipeline_checks and eval.not_averaged are applied on top, the direction untouched
    rec = Record(run_id="r", model=ModelRef(role="model"), metrics=metrics)
    suite = suite_metrics(rec, pipeline_checks=["lengthy"], not_averaged=["lengthy"])
    assert all(m.pipeline_check and not m.primary for m in suite.values())
    assert [m.higher_is_better for m in suite.values()] == [True, False]


def test_a_suites_task_and_pool_names_are_checked_when_it_loads(tmp_path):
    from distill.config import ConfigError

    with pytest.raises(ConfigError, match=r"eval.tasks: unknown task 'world-arih' \(did you mean 'world-arith'\?\)"):
        load_suite("world", ["eval.tasks={world-arih: 5}", "eval.not_averaged=[]", "eval.curve_tasks={}"])
    with pytest.raises(ConfigError, match="prompts.pools: unknown pool 'world-pik'"):
        load_suite("world", ["prompts.pools=[world-pik]"])
    with pytest.raises(ConfigError, match="teacher_train.tasks: unknown task 'world-cod'"):
        load_suite("world", ["teacher_train.tasks=[world-cod]", "teacher_train.task_weights={}"])


def test_plan_shows_forced_stages_and_refuses_an_unknown_force(tmp_path):
    run = SuiteRun(_suite(tmp_path, "methods=[sft,kd]"))
    with pytest.raises(ValueError, match="--force 'bogus' matches no stage"):
        run.plan(force=["bogus"])
    rows = {r["stage"]: r["status"] for r in run.plan(force=["train"])}
    assert rows["train:sft:s0"] == rows["train:kd:s0"] == "forced" and rows["teacher"] == "todo"


def test_a_second_run_on_one_directory_refuses_and_a_stale_lock_is_taken_over(tmp_path):
    import subprocess
    import sys

    from bench.lock import LOCK_NAME, RunLockedError, run_lock

    run = SuiteRun(_suite(tmp_path, "methods=[sft]"))
    lock = run.run_dir / LOCK_NAME
    hold = (
        "import fcntl, os, sys, time; f = open(sys.argv[1], 'a+'); fcntl.flock(f, fcntl.LOCK_EX); "
        "f.write(str(os.getpid())); f.flush(); print('held', flush=True); time.sleep(30)"
    )
    run.run_dir.mkdir(parents=True, exist_ok=True)
    holder = subprocess.Popen([sys.executable, "-c", hold, str(lock)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(RunLockedError, match=f"in use by another run \\(pid {holder.pid}\\)") as err:
            run.run(progress=False)
        assert "\n" not in str(err.value) and not (run.run_dir / "stages").exists()  # refused before any stage
    finally:
        holder.kill()
        holder.wait()
    with run_lock(run.run_dir):  # the holder was killed: the kernel released its lock, this run takes it
        assert lock.read_text().strip() == str(os.getpid())
        with pytest.raises(RunLockedError), run_lock(run.run_dir):  # and holds it: a second holder is refused
            pass
    # --wait: a second run waits for the holder instead of refusing, then takes the lock
    brief = hold.replace("time.sleep(30)", "time.sleep(1.5)")
    holder = subprocess.Popen([sys.executable, "-c", brief, str(lock)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        start = time.perf_counter()
        with run_lock(run.run_dir, wait=True):
            assert lock.read_text().strip() == str(os.getpid())  # taken once the holder let go
        assert time.perf_counter() - start > 0.5  # it waited
    finally:
        holder.kill()
        holder.wait()


def test_a_per_method_rate_shares_the_sweeps_training_stage_and_leaves_other_keys_alone():
    """``method_overrides: {gkd: [optim.lr=X]}`` trains as the sweep's ``train.lr=X`` does: one stage key for both."""
    from bench.sweep import sweep_variant

    base = load_suite("world", ["train.method_overrides={}"])
    chosen = load_suite("world", ["train.method_overrides={gkd: [optim.lr=1e-3, distillm.phi_init=0.2]}"])
    plain, per_method, swept = SuiteRun(base), SuiteRun(chosen), SuiteRun(sweep_variant(base, 1e-3))
    key = lambda run, name: run.by_name(name).key  # noqa: E731
    assert key(per_method, "train:sft:s0") == key(plain, "train:sft:s0")  # other methods keep their stages
    # the rate is folded into the key, but another override still counts
    assert key(per_method, "train:gkd:s0") != key(swept, "train:gkd:s0")
    only_lr = SuiteRun(load_suite("world", ["train.method_overrides={gkd: [optim.lr=1e-3]}"]))
    assert key(only_lr, "train:gkd:s0") == key(swept, "train:gkd:s0") != key(plain, "train:gkd:s0")


def test_teacher_responses_have_one_code_path_seqkd_reads_the_responses_stage(tiny_world):
    """The responses stage is where the teacher's train responses come from: SeqKD trains on exactly the responses KD
    trains on (epoch 0, read, not sampled again), and DistiLLM-2's later epochs join them in the same directory."""
    tmp_path, run, _ = tiny_world
    both = SuiteRun(_suite(tmp_path, "methods=[seqkd,distillm2]", "train.token_budget=3000"))  # DistiLLM-2: 2+ epochs
    both.run(progress=False, until="train:seqkd:s0")
    responses = both.output("responses")
    gen_dir = Path(responses["generations"])
    files = {p: p.stat().st_mtime_ns for p in gen_dir.glob("*.jsonl")}
    train_texts = [r["response"] for r in _jsonl(responses["train"])]
    epoch0 = [p for p in files if [r["text"] for r in _jsonl(p)] == train_texts]
    assert len(epoch0) == 1  # the train slice's epoch 0, written by the responses stage
    seqkd = both.output("train:seqkd:s0")["train"]
    assert seqkd["setup_generation_s"] > 0  # charged from the stage's file, as the cost table shows it
    cfg = load_config(TrainConfig, Path(seqkd["final"]).parent / "config.yaml")
    assert cfg.teacher_responses == responses["generations"] and cfg.method == "seqkd"
    assert {p: p.stat().st_mtime_ns for p in gen_dir.glob("*.jsonl")} == files  # nothing was sampled again
    both.run(progress=False, until="train:distillm2:s0")
    later = set(gen_dir.glob("*.jsonl")) - set(files)
    assert later and epoch0[0].stat().st_mtime_ns == files[epoch0[0]]  # epochs >= 1 added beside epoch 0
    assert all(len(_jsonl(p)) == len(train_texts) for p in later)
