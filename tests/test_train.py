"""The trainer: every method end to end, invariances (GA, DDP, resume after SIGKILL), schedules, failures."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from distill.config import ConfigError, load_config
from distill.data import Row, collate, shift_targets
from distill.sampling import AdaptiveOffPolicySampler, OfflineSampler, Plan, replay_threshold
from distill.schedules import AlphaCurriculum, DistiLLM2Config, beta_at
from distill.train import METHODS, TrainConfig, TrainingError, train
from tests.train_helpers import base_overrides, write_train_data

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def train_data(tmp_path_factory) -> Path:
    return write_train_data(tmp_path_factory.mktemp("data") / "train.jsonl")


@pytest.fixture(scope="session")
def teacher_dir(tmp_path_factory, train_data) -> str:
    """tiny-llama after a few epochs of SFT: a peaked teacher, so that divergences are informative."""
    out = tmp_path_factory.mktemp("teacher")
    cfg = load_config(
        TrainConfig,
        None,
        [
            "method=sft",
            "teacher.name=tiny-llama",
            "student.name=tiny-llama",
            f"data.train_file={train_data}",
            f"output_dir={out}",
            "optim.batch_size=8",
            "optim.epochs=6",
            "optim.lr=3e-3",
            "data.val_fraction=0",
            "resume=never",
        ],
    )
    train(cfg)
    return str(out / "final")


def run(train_data, teacher_dir, out, *extra) -> tuple[TrainConfig, list[dict]]:
    cfg = load_config(TrainConfig, None, [*base_overrides(train_data, teacher_dir, out), *extra])
    train(cfg)
    rows = [json.loads(line) for line in (Path(out) / "metrics.jsonl").read_text().splitlines()]
    return cfg, rows


def weights(path) -> dict[str, torch.Tensor]:
    return load_file(str(Path(path) / "final" / "model.safetensors"))


@pytest.mark.parametrize("method", sorted(METHODS))
def test_every_method_trains_and_writes_outputs(method, train_data, teacher_dir, tmp_path):
    _, rows = run(
        train_data,
        teacher_dir,
        tmp_path,
        f"method={method}",
        "optim.max_steps=8",
        "distillm.phi_init=0.9",
        *(["gkd_lambda=0.9"] if METHODS[method].lam is None else []),  # the others fix their own fraction
    )
    assert [r["step"] for r in rows] == list(range(1, 9))
    first, last = sum(r["loss"] for r in rows[:2]) / 2, sum(r["loss"] for r in rows[-2:]) / 2
    assert last < first, f"{method}: loss did not fall ({first:.4f} -> {last:.4f})"
    assert all(r["tokens"] > 0 and r["tokens_per_s"] > 0 for r in rows)
    for name in ("config.yaml", "metrics.jsonl", "summary.json", "final/model.safetensors", "final/tokenizer.json"):
        assert (tmp_path / name).is_file(), name
    assert (tmp_path / "checkpoints" / "step-00000008" / "optimizer.pt").is_file()
    summary = json.loads((tmp_path / "summary.json").read_text())
    on_policy = METHODS[method].sampler != "offline"
    assert (summary["generation_s"] > 0) == on_policy or method == "seqkd"


def test_collate_lays_out_prompt_and_response_with_shifted_targets():
    rows = [Row([1, 2, 3], [4, 5], "data"), Row([7], [8, 9, 10], "student")]
    b = collate(rows, pad_id=0)
    assert b["input_ids"].tolist() == [[1, 2, 3, 4, 5], [7, 8, 9, 10, 0]]
    assert b["labels"].tolist() == [[-100, -100, -100, 4, 5], [-100, 8, 9, 10, -100]]
    target, mask = shift_targets(b["labels"])
    # position t predicts token t+1: the last prompt token predicts the first response token (the SGO label fix)
    assert target[0][mask[0]].tolist() == [4, 5] and mask[0].tolist() == [False, False, True, True]
    assert target[1][mask[1]].tolist() == [8, 9, 10] and mask[1].tolist() == [True, True, True, False]
    assert b["is_student_response"].tolist() == [False, True]


def test_gradient_accumulation_invariance(train_data, teacher_dir, tmp_path):
    for method in ("kd", "distillm2"):
        common = [f"method={method}", "optim.max_steps=3", "save_every=0", "data.val_fraction=0"]
        _, a = run(train_data, teacher_dir, tmp_path / f"{method}-8x1", *common, "optim.batch_size=8")
        _, b = run(
            train_data, teacher_dir, tmp_path / f"{method}-1x8", *common, "optim.batch_size=1", "optim.grad_accum=8"
        )
        for ra, rb in zip(a, b, strict=True):
            assert ra["tokens"] == rb["tokens"]
            assert ra["loss"] == pytest.approx(rb["loss"], rel=1e-6, abs=1e-7)
        # after 3 AdamW steps (whose update ~ g/|g| amplifies rounding where g ~ 0) weights agree to 1e-4;
        # the gradients themselves agree to 1e-6 (test_accumulated_gradients_match)
        wa, wb = weights(tmp_path / f"{method}-8x1"), weights(tmp_path / f"{method}-1x8")
        for k in wa:
            torch.testing.assert_close(wa[k], wb[k], rtol=0, atol=1e-4)


@pytest.mark.parametrize("method", ["kd", "distillm2", "dpkd", "sft"])
def test_accumulated_gradients_match(method, train_data, teacher_dir, tmp_path):
    """One big micro-batch and eight micro-batches of one give the same gradient (step-level normalisation)."""
    from distill.models import ModelConfig, aligned_vocab_size, load_from_config
    from distill.train import LossComputer

    cfg = load_config(TrainConfig, None, [*base_overrides(train_data, teacher_dir, tmp_path), f"method={method}"])
    teacher, tok = load_from_config(ModelConfig(name=teacher_dir))
    student, _ = load_from_config(cfg.student)
    vocab = aligned_vocab_size(teacher, student, tok, tok)
    computer = LossComputer(cfg, student, teacher, vocab)
    rows = [json.loads(line) for line in Path(train_data).read_text().splitlines()][:8]
    enc = [Row(tok(r["prompt"])["input_ids"], tok(r["response"])["input_ids"] + [tok.eos_token_id]) for r in rows]
    if METHODS[method].sampler == "batched":  # pairs: teacher rows then student rows of the same prompts
        enc = [Row(r.prompt_ids, r.response_ids, "teacher") for r in enc[:4]] + [
            Row(r.prompt_ids, r.response_ids[::-1], "student") for r in enc[:4]
        ]
        groups = [enc, *[[enc[i], enc[i + 4]] for i in range(4)]]
    else:
        groups = [enc, *[[r] for r in enc]]
    info = {"epoch": 0, "beta": 0.6}
    grads = []
    for micro in (groups[:1], groups[1:]):
        student.zero_grad()
        batches = [collate(m, tok.pad_token_id) for m in micro]
        denom = computer.denominator(batches)
        for b in batches:
            loss, _ = computer(b, denom, info)
            loss.backward()
        grads.append({n: p.grad.clone() for n, p in student.named_parameters()})
    for n in grads[0]:
        torch.testing.assert_close(grads[0][n], grads[1][n], rtol=0, atol=1e-6)


def _cli(args: list[str], env: dict | None = None, launcher: list[str] | None = None) -> subprocess.CompletedProcess:
    cmd = [*(launcher or [sys.executable, "-m"]), "bench.cli", "train", *args]
    full_env = {**os.environ, **(env or {})}
    return subprocess.run(cmd, cwd=ROOT, env=full_env, capture_output=True, text=True, timeout=300)


@pytest.mark.slow  # two gloo processes: ~7 s
def test_two_process_ddp_equals_one_process(train_data, teacher_dir, tmp_path):
    common = ["method=kd", "optim.max_steps=4", "data.val_fraction=0", "optim.grad_accum=2"]
    base = base_overrides(train_data, teacher_dir, tmp_path / "ddp")
    torchrun = [
        str(Path(sys.executable).with_name("torchrun")),
        "--nproc_per_node",
        "2",
        "--master_port",
        "29533",
        "-m",
    ]
    res = _cli([*base, *common, "optim.batch_size=2"], launcher=torchrun)
    assert res.returncode == 0, res.stderr[-2000:]
    _, single = run(train_data, teacher_dir, tmp_path / "single", *common, "optim.batch_size=4")
    _assert_same_run(tmp_path / "ddp", tmp_path / "single", single)


def _assert_same_run(multi: Path, one: Path, single: list[dict]) -> None:
    """A multi-process run equals the single-process one: tokens, losses (rel 1e-5) and final weights (atol 1e-5)."""
    rows = [json.loads(line) for line in (multi / "metrics.jsonl").read_text().splitlines()]
    assert [r["tokens"] for r in rows] == [r["tokens"] for r in single]
    for rm, rs in zip(rows, single, strict=True):
        assert rm["loss"] == pytest.approx(rs["loss"], rel=1e-5)
    wm, ws = weights(multi), weights(one)
    assert wm.keys() == ws.keys()
    for k in wm:
        torch.testing.assert_close(wm[k], ws[k], rtol=0, atol=1e-5)


@pytest.mark.parametrize(
    "method",
    # all slow (subprocesses): the default set keeps the in-process Ctrl-C + resume == uninterrupted test below
    [pytest.param(m, marks=pytest.mark.slow) for m in ("kd", "distillm", "distillm2")],
)
def test_sigkill_and_resume_is_bitwise_equal(method, train_data, teacher_dir, tmp_path):
    common = [
        f"method={method}",
        "optim.max_steps=9",
        "save_every=3",
        "eval_every=2",
        "distillm.phi_init=0.9",
        "distillm.loss_eps=0.0",
        "distillm.buffer_capacity=6",
        f"cache_dir={tmp_path / 'generations'}",  # teacher samples: generated by the first run, read by the second
    ]
    _, ref = run(train_data, teacher_dir, tmp_path / "ref", *common)
    args = [*base_overrides(train_data, teacher_dir, tmp_path / "crash"), *common]
    killed = _cli(args, env={"DISTILLM_FAULT_KILL_AT_STEP": "7"})
    assert killed.returncode == -9  # SIGKILL after step 7: steps 7 (and its metrics) are lost with the process
    assert sorted(p.name for p in (tmp_path / "crash" / "checkpoints").iterdir()) == ["step-00000003", "step-00000006"]
    if method == "distillm":
        state = torch.load(
            tmp_path / "crash" / "checkpoints" / "step-00000006" / "sampler-rank0.pt", weights_only=False
        )
        assert len(state["sampler"]["buffer"]) > 0  # the replay buffer is mid-flight
    changed = _cli([*args, "resume=auto", "optim.lr=1e-3"])
    assert changed.returncode == 2 and "different config (optim.lr: " in changed.stderr  # names the key
    resumed = _cli([*args, "resume=auto"])
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert "resumed from step 6" in resumed.stderr
    wa, wb = weights(tmp_path / "ref"), weights(tmp_path / "crash")
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    rows = [json.loads(line) for line in (tmp_path / "crash" / "metrics.jsonl").read_text().splitlines()]
    assert [r["loss"] for r in rows] == [r["loss"] for r in ref]
    assert [r.get("phi") for r in rows] == [r.get("phi") for r in ref]
    # the teacher sampling a method needs is charged once, killed or not (DistiLLM-2 samples its teacher per epoch)
    cost = [json.loads((tmp_path / d / "summary.json").read_text())["setup_generation_s"] for d in ("ref", "crash")]
    assert cost[0] == pytest.approx(cost[1]) and (cost[0] > 0) == (method == "distillm2")


def test_phi_rises_when_validation_loss_rises():
    plan = Plan(micro_batch=1, grad_accum=1, n_examples=4, epochs=1)
    s = AdaptiveOffPolicySampler(
        plan, 0, [Row([1], [2])] * 4, lambda p, seed: [[3]] * len(p), phi_step=0.1, loss_eps=0.1
    )
    seen = []
    for v in [2.0, 1.9, 2.05, 2.01, 2.2, 2.25, 2.4, 1.0]:
        s.on_validation(v)
        seen.append(round(s.phi, 3))
    # first value sets the reference; 2.05 < 2.0 + 0.1; 2.2 >= 2.1 rises (ref 2.2); 2.25 no; 2.4 >= 2.3 rises
    assert seen == [0.0, 0.0, 0.0, 0.0, 0.1, 0.1, 0.2, 0.2]
    for _ in range(20):
        s.on_validation(s.prev_val + 1)
    assert s.phi == 1.0


def test_adaptive_sampler_branches_and_buffer():
    plan = Plan(micro_batch=2, grad_accum=2, n_examples=8, epochs=10)
    rows = [Row([i], [100 + i]) for i in range(8)]
    calls = []

    def gen(prompts, seed):
        calls.append(seed)
        return [[200 + p[0]] for p in prompts]

    s = AdaptiveOffPolicySampler(plan, 0, rows, gen, phi_init=1.0, capacity=4, schedule="constant")
    first = s.batches(0)
    assert all(r.source == "student" and r.response_ids == [200 + r.prompt_ids[0]] for b in first for r in b)
    assert len(s.buffer) == 4  # filled while below capacity
    kinds = {r.source for step in range(1, 20) for b in s.batches(step) for r in b}
    assert kinds == {"student"}  # phi = 1: always student outputs, fresh (u < 0.5) or replayed
    assert len(s.buffer) == 4 and s.stats["buffer_size"] == 4.0
    assert replay_threshold("decreasing", 0.5, 0.25) == 0.375
    assert replay_threshold("increasing", 0.5, 0.25) == 0.125
    assert replay_threshold("constant", 0.5, 0.9) == 0.25
    s0 = AdaptiveOffPolicySampler(plan, 0, rows, gen, phi_init=0.0)
    assert all(r.source == "data" for b in s0.batches(0) for r in b)


def test_data_order_is_deterministic_and_sharded():
    rows = [Row([i], [i]) for i in range(16)]
    one = OfflineSampler(Plan(4, 2, 16, 2), 5, rows)
    r0 = OfflineSampler(Plan(2, 2, 16, 2, world_size=2, rank=0), 5, rows)
    r1 = OfflineSampler(Plan(2, 2, 16, 2, world_size=2, rank=1), 5, rows)
    for step in range(4):
        full = one.step_indices(step)
        a, b = r0.step_indices(step), r1.step_indices(step)
        assert [x + y for x, y in zip(a, b, strict=True)] == full
    assert one.step_indices(0) != one.step_indices(2)  # a new permutation each epoch
    assert OfflineSampler(Plan(4, 2, 16, 2), 5, rows).step_indices(1) == one.step_indices(1)


def test_beta_schedules():
    cfg = DistiLLM2Config(beta_schedule="constant")
    assert beta_at(cfg, 50, 100, 10, 10) == 0.5
    lin = DistiLLM2Config(beta_schedule="linear")
    assert [beta_at(lin, s, 100, 10, 10) for s in (0, 25, 50, 99)] == [0.5, 0.625, 0.75, 0.75]
    paper = DistiLLM2Config(beta_schedule="paper")
    assert beta_at(paper, 0, 30, 10, 3) == 0.5  # clip(0 + 0, 0.5, 1)
    assert beta_at(paper, 7, 30, 10, 3) == pytest.approx(0.7)  # e/E + tau/T = 0 + 0.7
    assert beta_at(paper, 19, 30, 10, 3) == 1.0  # 1/3 + 0.9 clipped: the literal formula saturates


def test_alpha_curriculum_is_per_sample_clipped_and_off_in_epoch_one():
    cur = AlphaCurriculum(DistiLLM2Config())
    is_student = torch.tensor([False, False, True, True])
    logp = torch.tensor([-0.2, -0.3, -1.0, -2.0], requires_grad=True)
    logq = torch.tensor([-0.9, -0.4, -0.5, -0.1], requires_grad=True)
    a_t, a_s, active = cur.alphas(0, logp, logq, is_student)
    assert not active and torch.all(a_t == 0.1)
    gaps_t = (logp[:2].exp() - logq[:2].exp()).detach()
    gaps_s = (logq[2:].exp() - logp[2:].exp()).detach()
    assert cur.reference("teacher") == pytest.approx(float(gaps_t.mean()))
    assert cur.reference("student") == pytest.approx(float(gaps_s.mean()))
    logp2 = torch.tensor([-0.1, -0.5, -3.0, -0.05])
    logq2 = torch.tensor([-1.5, -0.55, -0.2, -0.3])
    alpha, _, active = cur.alphas(1, logp2, logq2, is_student)
    assert active and not alpha.requires_grad
    assert torch.all((alpha >= 0.01) & (alpha <= 0.1)) and len(set(alpha.tolist())) > 1
    gap = torch.stack(
        [
            logp2[0].exp() - logq2[0].exp(),
            logp2[1].exp() - logq2[1].exp(),
            logq2[2].exp() - logp2[2].exp(),
            logq2[3].exp() - logp2[3].exp(),
        ]
    )
    ref = torch.tensor([cur.reference("teacher")] * 2 + [cur.reference("student")] * 2)
    expect = torch.where(gap > 0, 1 - 0.9 * ref / gap, torch.tensor(0.01)).clamp(0.01, 0.1)
    torch.testing.assert_close(alpha, expect)
    assert alpha[3] == 0.01  # a non-positive gap (the easiest sample) gets the lower clip


def test_distillm2_curriculum_is_active_from_epoch_two(train_data, teacher_dir, tmp_path):
    _, rows = run(train_data, teacher_dir, tmp_path, "method=distillm2", "optim.epochs=2", "optim.batch_size=8")
    assert {r["epoch"] for r in rows} == {0, 1}
    for r in rows:
        assert all(0.01 <= a <= 0.1 for a in r["alpha"])
        assert r["alpha_active"] == (r["epoch"] == 1)
        assert "skl_teacher_resp" in r and "srkl_student_resp" in r and 0.5 <= r["beta"] <= 0.75
    assert all(a == 0.1 for r in rows if r["epoch"] == 0 for a in r["alpha"])


def test_non_finite_loss_stops_with_one_line_and_keeps_checkpoint(train_data, teacher_dir, tmp_path, monkeypatch):
    import distill.loss_step as tr

    real, calls = tr.compute_loss, {"n": 0}

    def flaky(*args, **kwargs):
        calls["n"] += 1
        value = real(*args, **kwargs)
        return value * float("nan") if calls["n"] == 3 else value

    monkeypatch.setattr(tr, "compute_loss", flaky)
    with pytest.raises(TrainingError) as err:
        run(train_data, teacher_dir, tmp_path, "method=kd", "optim.max_steps=5", "save_every=1")
    msg = str(err.value)
    assert "\n" not in msg and "non-finite loss at step 3" in msg and "loss=nan" in msg
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["step-00000001", "step-00000002"]
    assert not (tmp_path / "final").exists()


def test_config_errors(train_data):
    with pytest.raises(ConfigError, match="unknown keyword argument 'gamma'"):
        load_config(TrainConfig, None, [f"data.train_file={train_data}", "method=distillm", "loss_kwargs.gamma=1"])
    with pytest.raises(ConfigError, match="data.train_file is required"):
        load_config(TrainConfig, None, [])
    with pytest.raises(
        ConfigError, match="unknown method 'minillm' \\(did you mean 'distillm'\\?\\); allowed: sft, kd"
    ):
        load_config(TrainConfig, None, [f"data.train_file={train_data}", "method=minillm"])
    with pytest.raises(ConfigError, match="validation=off: method 'distillm' adapts"):
        load_config(TrainConfig, None, [f"data.train_file={train_data}", "method=distillm", "validation=off"])


def test_student_sampling_is_per_method_and_the_length_cap_keeps_it(train_data):
    from distill.sampling import student_sampling as _student_sampling

    cases = [("distillm", 1.0, 1.0), ("gkd", 1.0, 1.0), ("imitkd", 1.0, 1.0), ("distillm2", 0.8, 0.95)]
    cases += [("distillm_v1_batched", 0.8, 0.95), ("dpkd", 0.8, 0.95)]
    for method, temperature, top_p in cases:
        cfg = load_config(TrainConfig, None, [f"data.train_file={train_data}", f"method={method}"])
        sp = _student_sampling(cfg, 100)
        assert (sp.temperature, sp.top_p, sp.max_new_tokens) == (temperature, top_p, 100)
        capped = load_config(
            TrainConfig, None, [f"data.train_file={train_data}", f"method={method}", "student_max_new_tokens=12"]
        )
        assert vars(_student_sampling(capped, 100)) == {**vars(sp), "max_new_tokens": 12}


def test_progress_bar_guesses_the_step_count_of_a_token_budget(train_data):
    from distill.data import Example
    from distill.schedules import expected_steps

    def tok(text, add_special_tokens=False):  # one token per word
        return {"input_ids": text.split()}

    examples = [Example(prompt="p", response="a b c"), Example(prompt="p", response="a b c d e f g")]  # 4 and 8 (+EOS)
    for method, budget, expected in (("kd", 60, 5), ("kd", 10_000, 50), ("distillm2", 60, 3)):
        cfg = load_config(
            TrainConfig,
            None,
            [f"data.train_file={train_data}", f"method={method}", "optim.batch_size=2", f"optim.max_tokens={budget}"],
        )
        assert expected_steps(cfg, 50, examples, tok, world=1) == expected  # 12 tokens/step (24 with pairs)
    assert expected_steps(cfg, 50, [Example(prompt="p", response=None)], tok, world=1) == 50


@pytest.mark.parametrize("method", ["kd", "distillm"])
def test_validation_auto_and_no_final_checkpoint(method, train_data, teacher_dir, tmp_path):
    """validation=auto validates only where the data policy reads it; checkpoint_at_end=false writes no state."""
    _, rows = run(
        train_data,
        teacher_dir,
        tmp_path,
        f"method={method}",
        "optim.max_steps=3",
        "eval_every=2",
        "validation=auto",
        "checkpoint_at_end=false",
    )
    validated = [r["step"] for r in rows if "val_loss" in r]
    assert validated == ([] if method == "kd" else [2, 3])
    assert not (tmp_path / "checkpoints").exists() and (tmp_path / "final" / "model.safetensors").is_file()


def test_empty_and_missing_data_fail_clearly(tmp_path, teacher_dir):
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    cfg = load_config(TrainConfig, None, base_overrides(empty, teacher_dir, tmp_path / "o"))
    with pytest.raises(ValueError, match="training data file is empty"):
        train(cfg)
    cfg = load_config(TrainConfig, None, base_overrides(tmp_path / "nope.jsonl", teacher_dir, tmp_path / "o"))
    with pytest.raises(FileNotFoundError, match="training data file not found"):
        train(cfg)


def test_lora_trains_adapters_only(train_data, teacher_dir, tmp_path):
    _, rows = run(train_data, teacher_dir, tmp_path, "method=kd", "optim.max_steps=3", "lora.enabled=true", "lora.r=4")
    assert len(rows) == 3
    ckpt_files = {p.name for p in (tmp_path / "checkpoints" / "step-00000003" / "student").iterdir()}
    assert "adapter_model.safetensors" in ckpt_files
    assert "model.safetensors" in {p.name for p in (tmp_path / "final").iterdir()}  # merged for evaluation


def test_chunked_loss_path_matches_full_logits(train_data, teacher_dir, tmp_path):
    for method in ("kd", "distillm2"):
        common = [f"method={method}", "optim.max_steps=2", "data.val_fraction=0"]
        _, a = run(train_data, teacher_dir, tmp_path / f"{method}-full", *common)
        _, b = run(train_data, teacher_dir, tmp_path / f"{method}-chunked", *common, "chunked_loss=true")
        for ra, rb in zip(a, b, strict=True):
            assert ra["loss"] == pytest.approx(rb["loss"], rel=1e-5)


def test_teacher_cache_is_exact_at_full_k_and_reused(train_data, teacher_dir, tmp_path):
    common = ["method=kd", "optim.max_steps=3", "data.val_fraction=0", f"cache_dir={tmp_path / 'cache'}"]
    _, online = run(train_data, teacher_dir, tmp_path / "online", *common)
    _, cached = run(
        train_data, teacher_dir, tmp_path / "cached", *common, "teacher_cache.enabled=true", "teacher_cache.top_k=512"
    )
    for a, b in zip(online, cached, strict=True):
        assert a["loss"] == pytest.approx(b["loss"], rel=1e-5)
    files = list((tmp_path / "cache" / "teacher-topk").rglob("*.safetensors"))
    assert len(files) == 12  # 3 steps x 4 rows, one file per fixed row
    stamps = {f: f.stat().st_mtime_ns for f in files}
    _, again = run(
        train_data, teacher_dir, tmp_path / "again", *common, "teacher_cache.enabled=true", "teacher_cache.top_k=512"
    )
    assert [r["loss"] for r in again] == [r["loss"] for r in cached]
    assert {f: f.stat().st_mtime_ns for f in files} == stamps  # reused, not recomputed
    _, topk = run(
        train_data, teacher_dir, tmp_path / "topk", *common, "teacher_cache.enabled=true", "teacher_cache.top_k=8"
    )
    assert topk[0]["loss"] <= online[0]["loss"] + 1e-6  # top-k + tail bucket is a lower bound (distill/sparse.py)


@pytest.mark.parametrize(
    "content, message",
    [
        ('{"prompt": "a", "response": "b"}\n[1, 2]\n', r":2: a row must be a JSON object with a 'prompt', got list"),
        ('{"prompt": 7, "response": "b"}\n', r":1: 'prompt' must be a string or a list of chat messages, got 7"),
        ('{"prompt": "a", "response": ["b"]}\n', r":1: 'response' must be a string"),
        (b'{"prompt": "caf\xe9"}\n', r"not UTF-8 text \(byte 15\)"),
    ],
)
def test_malformed_data_rows_are_refused_naming_the_file_and_line(tmp_path, content, message):
    from distill.data import read_examples

    path = tmp_path / "bad.jsonl"
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    with pytest.raises(ValueError, match=message) as err:
        read_examples(path)
    assert str(path) in str(err.value) and "\n" not in str(err.value)


def test_a_missing_validation_file_is_named_as_such(tmp_path):
    from distill.data import split_examples

    data = tmp_path / "d.jsonl"
    data.write_text('{"prompt": "a", "response": "b"}\n')
    cfg = load_config(TrainConfig, None, [f"data.train_file={data}", f"data.val_file={tmp_path / 'nope.jsonl'}"])
    with pytest.raises(FileNotFoundError, match="validation data file not found"):
        split_examples(cfg.data, cfg.seed)


def test_a_method_that_reads_validation_refuses_to_run_without_validation_rows(train_data, tmp_path, monkeypatch):
    import distill.train
    from distill.data import Example, validation_rows

    def no_model(*a, **k):
        raise AssertionError("refused only after loading a model")

    monkeypatch.setattr(distill.train, "load_from_config", no_model)  # the refusal comes before any model loads
    cfg = load_config(TrainConfig, None, [f"data.train_file={train_data}", "method=distillm", "data.val_fraction=0"])
    with pytest.raises(ValueError, match="'distillm' adapts to the validation loss, but data.val_fraction=0.0 gives"):
        train(cfg)
    assert validation_rows(None, [Example(prompt="p", response=None)], cfg.data) == []  # no response: not a row


def test_a_finished_token_budget_run_is_complete_on_rerun(train_data, teacher_dir, tmp_path, capsys):
    """A budget run stops before its last planned step; rerunning it must not train past the budget."""
    extra = ("method=sft", "optim.max_tokens=150", "optim.epochs=100", "checkpoint_at_end=true")
    _, rows = run(train_data, teacher_dir, tmp_path, *extra)
    before, summary = weights(tmp_path), json.loads((tmp_path / "summary.json").read_text())
    _, again = run(train_data, teacher_dir, tmp_path, *extra[:-1], "resume=auto")
    assert "already complete" in capsys.readouterr().err
    assert again == rows and json.loads((tmp_path / "summary.json").read_text())["steps"] == summary["steps"]
    assert all(torch.equal(before[k], v) for k, v in weights(tmp_path).items())


def test_checkpoints_by_wall_time(train_data, teacher_dir, tmp_path):
    """``save_every_min`` checkpoints once that much time passed since the last one (here: after every step)."""
    run(train_data, teacher_dir, tmp_path, "method=sft", "optim.max_steps=4", "save_every_min=1e-9",
        "checkpoint_at_end=false", "keep_checkpoints=2")  # fmt: skip
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["step-00000002", "step-00000003"]


def test_ctrl_c_says_where_it_stopped_and_the_rerun_resumes_to_the_same_weights(
    train_data, teacher_dir, tmp_path, monkeypatch, capsys
):
    from distill.train_config import TrainingInterrupted

    extra = ("method=gkd", "optim.max_steps=6", "save_every=2", "save_every_min=0")
    run(train_data, teacher_dir, tmp_path / "whole", *extra)
    monkeypatch.setenv("DISTILLM_FAULT_KILL_AT_STEP", "5")
    monkeypatch.setenv("DISTILLM_FAULT_SIGNAL", "SIGINT")
    with pytest.raises(TrainingInterrupted, match=r"^interrupted at step 5; .* resume from step 4$"):
        run(train_data, teacher_dir, tmp_path / "cut", *extra)
    monkeypatch.delenv("DISTILLM_FAULT_KILL_AT_STEP")
    capsys.readouterr()
    run(train_data, teacher_dir, tmp_path / "cut", *extra, "resume=auto")
    assert "resumed from step 4" in capsys.readouterr().err
    whole, cut = weights(tmp_path / "whole"), weights(tmp_path / "cut")
    assert all(torch.equal(whole[k], cut[k]) for k in whole)


def test_truncated_prompts_and_responses_are_counted_and_warned_about(train_data, teacher_dir, tmp_path, capsys):
    run(train_data, teacher_dir, tmp_path / "fits", "method=sft", "optim.max_steps=1")
    fits = json.loads((tmp_path / "fits" / "summary.json").read_text())["truncated"]
    assert fits["prompts"] == fits["responses"] == 0 and fits["examples"] > 0
    assert "warning: truncated" not in capsys.readouterr().err
    run(train_data, teacher_dir, tmp_path / "cut", "method=sft", "optim.max_steps=1", "data.max_prompt_len=3",
        "data.max_len=5")  # fmt: skip
    cut = json.loads((tmp_path / "cut" / "summary.json").read_text())["truncated"]
    assert cut["prompts"] == cut["examples"] == fits["examples"] and cut["responses"] == cut["with_response"]
    err = capsys.readouterr().err
    assert f"warning: truncated {cut['examples']} of {cut['examples']} prompts (data.max_prompt_len=3)" in err


def test_the_logged_lr_is_the_rate_the_step_used(train_data, teacher_dir, tmp_path):
    """metrics.jsonl's ``lr`` is the rate of its own step (it once showed the next step's, read after the
    scheduler stepped): warmup over 3 steps, then constant."""
    cfg, rows = run(train_data, teacher_dir, tmp_path, "method=sft", "optim.max_steps=5", "optim.warmup_steps=3",
                    "optim.schedule=constant", "validation=off")  # fmt: skip
    assert [r["lr"] for r in rows] == pytest.approx([cfg.optim.lr * k / 4 for k in (1, 2, 3, 4, 4)], rel=1e-12)


@pytest.mark.slow  # two gloo processes under accelerate's FSDP: ~20 s
def test_two_process_fsdp_on_cpu_equals_one_process(train_data, teacher_dir, tmp_path):
    """FSDP2 full sharding of the student through accelerate (the shipped fsdp.yaml, on the CPU with gloo)."""
    import yaml

    cfg = yaml.safe_load((ROOT / "bench" / "configs" / "accelerate" / "fsdp.yaml").read_text())
    cfg.update(num_processes=2, use_cpu=True, mixed_precision="no", main_process_port=29547)
    cfg["fsdp_config"]["fsdp_cpu_ram_efficient_loading"] = False
    (tmp_path / "fsdp.yaml").write_text(yaml.safe_dump(cfg))
    common = ["method=kd", "optim.max_steps=3", "data.val_fraction=0"]
    launcher = [str(Path(sys.executable).with_name("accelerate")), "launch", "--config_file",
                str(tmp_path / "fsdp.yaml"), "-m"]  # fmt: skip
    res = _cli([*base_overrides(train_data, teacher_dir, tmp_path / "fsdp"), *common, "optim.batch_size=2"],
               launcher=launcher)  # fmt: skip
    assert res.returncode == 0, res.stderr[-2000:]
    _, single = run(train_data, teacher_dir, tmp_path / "single", *common, "optim.batch_size=4")
    _assert_same_run(tmp_path / "fsdp", tmp_path / "single", single)


def test_the_shipped_zero3_config_loads_and_plans():
    """DeepSpeed is not installed here (it needs CUDA to build): accelerate's own config loader and plugin accept
    the shipped ZeRO-3 file and plan stage 3 with 16-bit saving. Running it stays untested without a GPU."""
    from accelerate.commands.config.config_args import load_config_from_file
    from accelerate.utils import DeepSpeedPlugin, DistributedType

    acc = load_config_from_file(str(ROOT / "bench" / "configs" / "accelerate" / "deepspeed_zero3.yaml"))
    assert acc.distributed_type == DistributedType.DEEPSPEED
    plugin = DeepSpeedPlugin(**acc.deepspeed_config)
    zero = plugin.deepspeed_config["zero_optimization"]
    assert zero["stage"] == 3 and zero["stage3_gather_16bit_weights_on_model_save"] is True
    assert plugin.deepspeed_config["gradient_clipping"] == 1.0


def test_the_validation_loss_and_the_fidelity_nll_are_the_token_nll_of_torch():
    """One token NLL (``distill.losses.label_logprobs``) behind the trainer's validation loss and the eval's
    fidelity NLL; both equal torch's cross-entropy over the response tokens."""
    from bench.fidelity import fidelity, teacher_logprobs
    from distill.data import Example, encode_example
    from distill.loss_step import validation_nll
    from distill.models import ModelConfig, load_for_inference

    model, tok = load_for_inference(ModelConfig(name="tiny-llama"))
    held = [Example(prompt=f"add {i} and {i + 1}", response=f"the sum is {2 * i + 1}.") for i in range(5)]
    rows = [encode_example(tok, e, 32, 64) for e in held]
    vocab = model.config.vocab_size
    b = collate(rows, tok.pad_token_id)
    with torch.no_grad():
        logits = model(input_ids=b["input_ids"], attention_mask=b["attention_mask"]).logits[:, :-1]
    target, _ = shift_targets(b["labels"])
    want = torch.nn.functional.cross_entropy(logits.flatten(0, 1).float(), target.flatten(), ignore_index=-100)
    assert validation_nll(model, rows, 2, tok.pad_token_id, vocab, "cpu") == pytest.approx(float(want), rel=1e-5)
    t_lp = teacher_logprobs("nll-test", model, rows, tok.pad_token_id, vocab, 2)
    metrics, _ = fidelity(model, tok, held, t_lp, max_prompt_len=32, max_len=64, batch_size=2, max_new_tokens=2)
    assert metrics["fidelity/nll"] == pytest.approx(float(want), rel=1e-5)
    assert metrics["fidelity/kl"] == pytest.approx(0.0, abs=1e-6)  # the model against itself
