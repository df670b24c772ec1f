"""The contract every data policy in ``SAMPLERS`` keeps: the same rows for the same seed, a ``state_dict`` round
trip that resumes the same stream, and teacher/student rows that pair by prompt."""

from __future__ import annotations

import copy
import json

import pytest

from distill.config import ConfigError, load_config
from distill.data import Row
from distill.methods import METHODS, Method
from distill.sampling import SAMPLERS, Plan, make_sampler
from distill.train_config import TrainConfig

N, STEPS = 24, 10  # 24 examples, micro-batch 2 x 2 accumulation: 6 steps per epoch; 10 steps cross an epoch
BY_SAMPLER = {m.sampler: name for name, m in METHODS.items() if m.compared}  # one method per data policy


def _generate(prompts: list[list[int]], seed: int) -> list[list[int]]:
    """A deterministic stand-in student: its response depends on the prompt and the seed only."""
    return [[50 + (sum(p) + seed) % 11, 60 + seed % 5] for p in prompts]


def _sampler(name: str, tmp_path, seed: int = 0):
    data = tmp_path / "d.jsonl"
    data.write_text("".join(json.dumps({"prompt": f"p{i}", "response": "r"}) + "\n" for i in range(N)))
    cfg = load_config(TrainConfig, None, [f"data.train_file={data}", f"method={name}", f"seed={seed}"])
    plan = Plan(2, 2, N, 3)
    prompts = [[1, 2, i] for i in range(N)]
    rows = [Row(p, [40 + p[-1] % 3], "data") for p in prompts]
    teacher = lambda epoch: [[30 + (p[-1] + epoch) % 7] for p in prompts]  # noqa: E731
    return make_sampler(cfg, plan, lambda: rows, prompts, teacher, _generate)


def _stream(sampler, steps) -> list:
    out = []
    for step in steps:
        for loss in (0.5,) if step % 3 == 2 else ():
            sampler.on_validation(loss + step)  # DistiLLM's schedule reacts to the validation loss
        out.append([[(r.prompt_ids, r.response_ids, r.source) for r in mb] for mb in sampler.batches(step)])
    return out


def test_every_data_policy_has_a_compared_method():
    assert set(BY_SAMPLER) == set(SAMPLERS)


@pytest.mark.parametrize("policy", sorted(SAMPLERS))
def test_same_seed_same_rows_and_another_seed_other_rows(policy, tmp_path):
    name = BY_SAMPLER[policy]
    a = _stream(_sampler(name, tmp_path), range(STEPS))
    assert a == _stream(_sampler(name, tmp_path), range(STEPS))
    assert a != _stream(_sampler(name, tmp_path, seed=1), range(STEPS))
    assert all(len(step) == 2 for step in a)  # two micro-batches per step


@pytest.mark.parametrize("policy", sorted(SAMPLERS))
def test_state_dict_round_trip_resumes_the_same_stream(policy, tmp_path):
    name = BY_SAMPLER[policy]
    whole = _stream(_sampler(name, tmp_path), range(STEPS))
    first = _sampler(name, tmp_path)
    _stream(first, range(4))
    state = copy.deepcopy(first.state_dict())
    resumed = _sampler(name, tmp_path)
    resumed.load_state_dict(state)
    assert _stream(resumed, range(4, STEPS)) == whole[4:]


def test_batched_rows_pair_teacher_and_student_responses_by_prompt(tmp_path):
    for step in _stream(_sampler(BY_SAMPLER["batched"], tmp_path), range(STEPS)):
        for mb in step:
            half = len(mb) // 2
            teacher, student = mb[:half], mb[half:]
            assert [r[2] for r in teacher] == ["teacher"] * half and [r[2] for r in student] == ["student"] * half
            assert [r[0] for r in teacher] == [r[0] for r in student]  # the k-th teacher row pairs with the k-th


def test_a_method_naming_an_unknown_sampler_is_refused(tmp_path, monkeypatch):
    monkeypatch.setitem(METHODS, "typo", Method("on_polcy", "forward_kl"))
    with pytest.raises(ConfigError, match="unknown sampler 'on_polcy'"):
        load_config(TrainConfig, None, [f"data.train_file={tmp_path / 'x.jsonl'}", "method=typo"])


@pytest.mark.parametrize("lam", [0.0, 0.3, 0.5, 0.9, 1.0])
def test_the_on_policy_fraction_is_lambda_from_the_first_steps(lam):
    """Stratified micro-batches: any k consecutive ones hold floor(k λ) or ceil(k λ) on-policy batches, every rank
    decides alike, and across seeds each micro-batch is on-policy with probability λ (GKD's coin's marginal)."""
    import math

    from distill.sampling import OnPolicyMixSampler

    rows = [Row([1, i], [2], "data") for i in range(64)]
    for seed in range(4):
        sampler = OnPolicyMixSampler(Plan(2, 2, 64, 1), seed, rows, _generate, lam)
        flags = [sampler.on_policy(g) for g in range(40)]
        for k in (1, 2, 8, 40):
            for start in range(0, 40 - k + 1):
                assert math.floor(k * lam) <= sum(flags[start : start + k]) <= math.ceil(k * lam)
        other_rank = OnPolicyMixSampler(Plan(2, 2, 64, 1, world_size=2, rank=1), seed, rows, _generate, lam)
        assert [other_rank.on_policy(g) for g in range(40)] == flags
        batches = sampler.batches(3)  # micro-batches 6 and 7
        assert [b[0].is_student for b in batches] == flags[6:8] and sampler.stats["on_policy_fraction"] == sum(
            flags[6:8]
        ) / 2
    first = [OnPolicyMixSampler(Plan(2, 2, 64, 1), s, rows, _generate, lam).on_policy(0) for s in range(400)]
    assert abs(sum(first) / 400 - lam) < 0.08


def test_a_method_with_its_own_on_policy_fraction_refuses_another(tmp_path):
    data = tmp_path / "d.jsonl"
    data.write_text('{"prompt": "p", "response": "r"}\n')
    with pytest.raises(ConfigError, match=r"gkd_lambda=0.9: method 'imitkd' fixes its own on-policy fraction at 1.0"):
        load_config(TrainConfig, None, [f"data.train_file={data}", "method=imitkd", "gkd_lambda=0.9"])
    assert (
        load_config(TrainConfig, None, [f"data.train_file={data}", "method=gkd", "gkd_lambda=0.9"]).gkd_lambda == 0.9
    )
