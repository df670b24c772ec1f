"""Per-token distillation losses against the paper equations (float64 transcriptions) and their properties."""

from __future__ import annotations

import math
import re

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from distill.losses import (
    LOSSES,
    check_loss_kwargs,
    compute_loss,
    distillm2_contrastive,
    dpkd,
    forward_kl,
    generalized_jsd,
    get_loss,
    nll,
    reduce_loss,
    reverse_kl,
    skew_forward_kl,
    skew_reverse_kl,
    total_variation,
)

B, T, V = 3, 4, 11
DIVERGENCES = {
    "forward_kl": forward_kl,
    "reverse_kl": reverse_kl,
    "skew_forward_kl": skew_forward_kl,
    "skew_reverse_kl": skew_reverse_kl,
    "generalized_jsd": generalized_jsd,
    "total_variation": total_variation,
}


def logits(*shape: int, seed: int = 0, scale: float = 2.0, dtype=torch.float64) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(*shape, generator=g, dtype=torch.float64) * scale).to(dtype)


# Direct transcriptions of the paper equations on probability vectors (methods.md Sec. 1), float64.
def kl(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return torch.where(x > 0, x * (x.log() - y.log()), 0.0).sum(-1)


def reference(name: str, s: torch.Tensor, t: torch.Tensor, a: float = 0.1) -> torch.Tensor:
    p, q = t.softmax(-1), s.softmax(-1)
    return {
        "forward_kl": lambda: kl(p, q),
        "reverse_kl": lambda: kl(q, p),
        "skew_forward_kl": lambda: kl(p, a * p + (1 - a) * q),
        "skew_reverse_kl": lambda: kl(q, (1 - a) * p + a * q),
        "generalized_jsd": lambda: a * kl(p, a * p + (1 - a) * q) + (1 - a) * kl(q, a * p + (1 - a) * q),
        "total_variation": lambda: 0.5 * (p - q).abs().sum(-1),
    }[name]()


def call(name: str, s: torch.Tensor, t: torch.Tensor, a: float = 0.1) -> torch.Tensor:
    if name in ("skew_forward_kl", "skew_reverse_kl"):
        return DIVERGENCES[name](s, t, alpha=a)
    if name == "generalized_jsd":
        return generalized_jsd(s, t, beta=a)
    return DIVERGENCES[name](s, t)


@pytest.mark.parametrize("name", DIVERGENCES)
@pytest.mark.parametrize("a", [0.1, 0.37, 0.9])
def test_matches_paper_equation_float64(name: str, a: float) -> None:
    s, t = logits(B, T, V, seed=1), logits(B, T, V, seed=2)
    out = call(name, s, t, a)
    assert out.shape == (B, T) and out.dtype == torch.float64
    torch.testing.assert_close(out, reference(name, s, t, a), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("name", DIVERGENCES)
def test_float32_output_and_zero_at_identical_inputs(name: str) -> None:
    s = logits(B, T, V, dtype=torch.float32)
    out = call(name, s, s.clone())
    assert out.dtype == torch.float32 and out.shape == (B, T)
    torch.testing.assert_close(out, torch.zeros(B, T), rtol=0, atol=2e-6)


def test_alpha_limits() -> None:
    s, t = logits(B, T, V, seed=3), logits(B, T, V, seed=4)
    torch.testing.assert_close(skew_forward_kl(s, t, alpha=0.0), forward_kl(s, t), rtol=1e-13, atol=0)
    torch.testing.assert_close(skew_reverse_kl(s, t, alpha=0.0), reverse_kl(s, t), rtol=1e-13, atol=0)
    torch.testing.assert_close(skew_forward_kl(s, t, alpha=1.0), torch.zeros(B, T, dtype=torch.float64))
    torch.testing.assert_close(skew_reverse_kl(s, t, alpha=1.0), torch.zeros(B, T, dtype=torch.float64))
    # Near the limits (the logaddexp branch, not the shortcut) the values converge too.
    torch.testing.assert_close(skew_forward_kl(s, t, alpha=1e-9), forward_kl(s, t), rtol=1e-6, atol=0)
    assert float(skew_reverse_kl(s, t, alpha=1 - 1e-9).abs().max()) < 1e-8


@pytest.mark.parametrize("beta", [0.1, 0.5, 0.9])
def test_jsd_is_weighted_sum_of_skews(beta: float) -> None:
    """JSD_b = b SKL^b + (1 - b) SRKL^(1-b) (DistiLLM Sec. 3)."""
    s, t = logits(B, T, V, seed=5), logits(B, T, V, seed=6)
    expected = beta * skew_forward_kl(s, t, alpha=beta) + (1 - beta) * skew_reverse_kl(s, t, alpha=1 - beta)
    torch.testing.assert_close(generalized_jsd(s, t, beta=beta), expected, rtol=1e-12, atol=1e-14)


def test_jsd_endpoints_follow_gkd_and_trl() -> None:
    s, t = logits(B, T, V, seed=7), logits(B, T, V, seed=8)
    torch.testing.assert_close(generalized_jsd(s, t, beta=0.0), forward_kl(s, t))
    torch.testing.assert_close(generalized_jsd(s, t, beta=1.0), reverse_kl(s, t))


def test_skl_gradient_follows_paper_and_ratio_is_bounded_by_inverse_alpha() -> None:
    """grad SKL^a = -(1-a) sum_v r(v) grad q(v) with r = p / (a p + (1-a) q) <= 1/a, while FKL's p/q is unbounded."""
    alpha = 0.1
    t = torch.tensor([[[6.0, 0.0, -1.0, 2.0, 0.5]]], dtype=torch.float64)
    s = torch.tensor([[[-12.0, 3.0, 1.0, -1.0, 0.0]]], dtype=torch.float64, requires_grad=True)
    p, q = t.softmax(-1), s.softmax(-1).detach()
    (grad,) = torch.autograd.grad(skew_forward_kl(s, t, alpha=alpha).sum(), s)
    ratio = p / (alpha * p + (1 - alpha) * q)
    coeff = -(1 - alpha) * ratio  # dSKL/dq(v); chain through softmax: dq(v)/ds(u) = q(v) (1[u=v] - q(u))
    expected = q * (coeff - (q * coeff).sum(-1, keepdim=True))
    torch.testing.assert_close(grad, expected, rtol=1e-12, atol=1e-14)
    assert float(ratio.max()) <= 1 / alpha
    assert float((p / q).max()) > 1e6  # the FKL ratio on the same pair


def test_srkl_stop_grad_changes_gradient_not_value() -> None:
    s = logits(B, T, V, seed=9).requires_grad_()
    t = logits(B, T, V, seed=10)
    plain, detached = skew_reverse_kl(s, t, alpha=0.3), skew_reverse_kl(s, t, alpha=0.3, stop_grad_mixture=True)
    torch.testing.assert_close(plain, detached, rtol=0, atol=0)
    (g_plain,) = torch.autograd.grad(plain.sum(), s)
    (g_det,) = torch.autograd.grad(detached.sum(), s)
    assert float((g_plain - g_det).abs().max()) > 1e-3
    q = s.softmax(-1)  # transcription: KL(q || m) with m a constant
    m = (0.7 * t.softmax(-1) + 0.3 * q).detach()
    (g_ref,) = torch.autograd.grad(kl(q, m).sum(), s)
    torch.testing.assert_close(g_det, g_ref, rtol=1e-10, atol=1e-12)


def test_distillm2_equals_mean_of_per_sequence_skl_and_srkl_at_half_beta() -> None:
    """With b = 1/2 and fixed alpha: CALD (DistiLLM-2 Eq. 5) = mean over sequences of SKL(y_t) and SRKL(y_s)."""
    s, t = logits(4, T, V, seed=11), logits(4, T, V, seed=12)
    roles = torch.tensor([False, True, False, True])
    mask = torch.tensor([[1, 1, 1, 0], [1, 1, 0, 0], [1, 1, 1, 1], [0, 1, 1, 1]], dtype=torch.bool)
    out = distillm2_contrastive(s, t, is_student_response=roles, alpha_teacher=0.1, alpha_student=0.1, beta=0.5)
    per_seq = []
    for b in range(4):
        fn = reference("skew_reverse_kl", s[b], t[b]) if roles[b] else reference("skew_forward_kl", s[b], t[b])
        per_seq.append(fn[mask[b]].mean())
    torch.testing.assert_close(reduce_loss(out, mask, "sequence"), torch.stack(per_seq).mean(), rtol=1e-12, atol=0)


def test_distillm2_beta_and_per_sample_alpha() -> None:
    s, t = logits(4, T, V, seed=13), logits(4, T, V, seed=14)
    roles = torch.tensor([True, False, False, True])
    a_t, a_s = torch.tensor([0.05, 0.1, 0.02, 0.08]), torch.tensor([0.01, 0.03, 0.1, 0.06])
    out = distillm2_contrastive(s, t, is_student_response=roles, alpha_teacher=a_t, alpha_student=a_s, beta=0.7)
    for b in range(4):
        if roles[b]:
            expected = 2 * 0.7 * reference("skew_reverse_kl", s[b], t[b], float(a_s[b]))
        else:
            expected = 2 * 0.3 * reference("skew_forward_kl", s[b], t[b], float(a_t[b]))
        torch.testing.assert_close(out[b], expected, rtol=1e-6, atol=1e-9)  # alphas are float32 tensors


def test_neg_inf_in_both_models_contributes_exactly_zero() -> None:
    """Padded vocabulary rows (-inf in both) give the loss over the remaining vocabulary, with finite gradients."""
    s, t = logits(B, T, V, seed=15), logits(B, T, V, seed=16)
    pad = torch.zeros(V, dtype=torch.bool)
    pad[[2, 7]] = True
    s_pad = s.masked_fill(pad, -math.inf).requires_grad_()
    t_pad = t.masked_fill(pad, -math.inf)
    for name in DIVERGENCES:
        out = call(name, s_pad, t_pad, 0.2)
        torch.testing.assert_close(out, call(name, s[..., ~pad], t[..., ~pad], 0.2), rtol=1e-12, atol=1e-14)
        (g,) = torch.autograd.grad(out.sum(), s_pad)
        assert torch.isfinite(g).all(), name
        assert float(g[..., pad].abs().max()) == 0.0, name


@pytest.mark.parametrize("name", DIVERGENCES)
@pytest.mark.parametrize("where", ["teacher", "student"])
def test_neg_inf_in_one_model_only(name: str, where: str) -> None:
    s, t = logits(B, T, V, seed=17), logits(B, T, V, seed=18)
    hole = torch.zeros(V, dtype=torch.bool)
    hole[[0, 5]] = True
    if where == "teacher":
        t = t.masked_fill(hole, -math.inf)
    else:
        s = s.masked_fill(hole, -math.inf)
    s = s.requires_grad_()
    out = call(name, s, t, 0.2)
    (g,) = torch.autograd.grad(out.sum(), s)
    assert torch.isfinite(out).all() and torch.isfinite(g).all()
    if name in ("forward_kl", "reverse_kl"):  # true value +inf in one direction: DistiLLM's common-support sum
        p, q = t.softmax(-1)[..., ~hole], s.detach().softmax(-1)[..., ~hole]
        expected = kl(p, q) if name == "forward_kl" else kl(q, p)  # sum over the common support
        torch.testing.assert_close(out, expected, rtol=1e-12, atol=1e-14)
    else:  # mixtures keep the exact value
        torch.testing.assert_close(out, reference(name, s.detach(), t.detach(), 0.2), rtol=1e-12, atol=1e-14)


def test_rows_without_any_finite_logit_give_zero_loss_and_gradient() -> None:
    s, t = logits(B, T, V, seed=19), logits(B, T, V, seed=20)
    s[0, 1] = -math.inf
    t[2, 3] = -math.inf
    s = s.requires_grad_()
    for name in DIVERGENCES:
        out = call(name, s, t)
        (g,) = torch.autograd.grad(out.sum(), s)
        assert float(out[0, 1].detach()) == 0.0 and float(out[2, 3].detach()) == 0.0, name
        assert torch.isfinite(g).all() and float(g[0, 1].abs().max()) == 0.0, name


@pytest.mark.parametrize("name", sorted(LOSSES))
def test_masked_garbage_rows_inject_no_nan(name: str) -> None:
    """Through compute_loss, masked positions with NaN / inf / all -inf logits change neither value nor gradient."""
    s, t = logits(4, T, V, seed=21), logits(4, T, V, seed=22)
    mask = torch.ones(4, T, dtype=torch.bool)
    mask[:, -1] = False
    kwargs = batch_inputs(name)
    s_clean = s.clone().requires_grad_()
    clean = compute_loss(name, s_clean, t, mask=mask, reduction="sequence", **kwargs)
    s_bad, t_bad = s.clone(), t.clone()
    s_bad[0, -1] = math.nan
    s_bad[1, -1] = -math.inf
    t_bad[2, -1] = math.inf
    t_bad[3, -1, 3] = math.nan
    s_bad.requires_grad_()
    bad = compute_loss(name, s_bad, t_bad, mask=mask, reduction="sequence", **kwargs)
    torch.testing.assert_close(bad, clean)
    (g_bad,) = torch.autograd.grad(bad, s_bad)
    (g_clean,) = torch.autograd.grad(clean, s_clean)
    torch.testing.assert_close(g_bad, g_clean)


def test_nan_at_a_trained_position_is_not_hidden() -> None:
    s, t = logits(B, T, V, seed=23), logits(B, T, V, seed=24)
    s[1, 2, 4] = math.nan
    assert torch.isnan(compute_loss("skew_reverse_kl", s, t, mask=torch.ones(B, T, dtype=torch.bool)))


def batch_inputs(name: str, batch: int = 4) -> dict:
    spec = LOSSES[name]
    out = {}
    if "labels" in spec.batch_inputs:
        out["labels"] = torch.randint(0, V, (batch, T), generator=torch.Generator().manual_seed(0))
    if "is_student_response" in spec.batch_inputs:
        out["is_student_response"] = torch.tensor([False, True] * (batch // 2))
    return out


@pytest.mark.parametrize("name", sorted(LOSSES))
def test_bf16_inputs(name: str) -> None:
    s, t = logits(4, T, V, seed=25, dtype=torch.bfloat16), logits(4, T, V, seed=26, dtype=torch.bfloat16)
    s.requires_grad_()
    mask = torch.ones(4, T, dtype=torch.bool)
    out = compute_loss(name, s, t, mask=mask, **batch_inputs(name))
    assert out.dtype == torch.float32 and torch.isfinite(out)
    ref = compute_loss(name, s.detach().float(), t.float(), mask=mask, **batch_inputs(name))
    torch.testing.assert_close(out, ref, rtol=1e-6, atol=1e-6)  # the upcast is exact: same float32 math
    (g,) = torch.autograd.grad(out, s)
    assert g.dtype == torch.bfloat16 and torch.isfinite(g).all()


@pytest.mark.parametrize("name", sorted(LOSSES))
def test_every_registered_loss_is_finite_and_nonnegative(name: str) -> None:
    s = logits(4, T, V, seed=27).requires_grad_()
    out = compute_loss(
        name, s, logits(4, T, V, seed=28), mask=torch.ones(4, T, dtype=torch.bool), **batch_inputs(name)
    )
    (g,) = torch.autograd.grad(out, s)
    assert out.shape == () and float(out.detach()) >= 0 and torch.isfinite(g).all()


@settings(max_examples=25, deadline=None)
@given(scale=st.floats(0.01, 30.0), seed=st.integers(0, 10_000), a=st.floats(0.0, 1.0))
def test_divergences_are_nonnegative_and_bounded(scale: float, seed: int, a: float) -> None:
    s, t = logits(2, 3, 7, seed=seed, scale=scale), logits(2, 3, 7, seed=seed + 1, scale=scale)
    for name in DIVERGENCES:
        out = call(name, s, t, a)
        assert bool((out >= -1e-12).all()), name
    assert bool((skew_forward_kl(s, t, alpha=max(a, 1e-3)) <= -math.log(max(a, 1e-3)) + 1e-9).all())
    assert bool((total_variation(s, t) <= 1 + 1e-12).all())


def test_nll_is_cross_entropy_and_ignores_minus_100() -> None:
    s = logits(B, T, V, seed=29)
    labels = torch.randint(0, V, (B, T), generator=torch.Generator().manual_seed(1))
    labels[0, 0] = -100
    expected = F.cross_entropy(s.reshape(-1, V), labels.reshape(-1), reduction="none").reshape(B, T)
    torch.testing.assert_close(nll(s, labels=labels), expected)
    assert float(nll(s, labels=labels)[0, 0]) == 0.0


def test_dpkd_matches_dpo_with_teacher_reference() -> None:
    s, t = logits(4, T, V, seed=30), logits(4, T, V, seed=31)
    labels = torch.randint(0, V, (4, T), generator=torch.Generator().manual_seed(2))
    labels[1, :2] = -100
    roles = torch.tensor([False, False, True, True])  # pairs: (row 0, row 2), (row 1, row 3)

    def mean_logp(x: torch.Tensor, b: int) -> torch.Tensor:
        keep = labels[b] != -100
        return x[b].log_softmax(-1).gather(-1, labels[b].clamp_min(0)[:, None]).squeeze(-1)[keep].mean()

    expected = []
    for chosen, rejected in [(0, 2), (1, 3)]:
        margin = (mean_logp(s, chosen) - mean_logp(s, rejected)) - (mean_logp(t, chosen) - mean_logp(t, rejected))
        expected.append(-F.logsigmoid(0.2 * margin))
    out = dpkd(s, t, labels=labels, is_student_response=roles, beta=0.2)
    torch.testing.assert_close(out, torch.stack(expected), rtol=1e-12, atol=1e-14)
    # Sign convention of DPO: raising the student's log-prob of the chosen (teacher) response lowers the loss.
    boosted = s.clone()
    boosted[0].scatter_add_(-1, labels[0].clamp_min(0)[:, None], torch.full((T, 1), 1.0, dtype=torch.float64))
    assert float(dpkd(boosted, t, labels=labels, is_student_response=roles, beta=0.2)[0]) < float(out[0])
    with pytest.raises(ValueError, match="as many"):
        dpkd(s, t, labels=labels, is_student_response=torch.tensor([False, True, True, True]))


def test_reduce_loss_modes() -> None:
    per_token = torch.arange(12, dtype=torch.float32).reshape(3, 4)
    mask = torch.tensor([[1, 1, 0, 0], [1, 1, 1, 1], [0, 0, 0, 0]], dtype=torch.bool)
    assert float(reduce_loss(per_token, mask, "token")) == pytest.approx((0 + 1 + 4 + 5 + 6 + 7) / 6)
    assert float(reduce_loss(per_token, mask, "sequence")) == pytest.approx((0.5 + 5.5) / 2)  # empty row excluded
    assert float(reduce_loss(per_token, mask, "sum")) == pytest.approx(23)
    assert float(reduce_loss(per_token, mask, "token", denominator=23)) == pytest.approx(1.0)
    assert float(reduce_loss(per_token, torch.zeros_like(mask), "token")) == 0.0
    per_token[2] = math.nan  # masked NaN never reaches the value
    assert float(reduce_loss(per_token, mask, "sequence")) == pytest.approx(3.0)
    with pytest.raises(ValueError, match="reduction mode"):
        reduce_loss(per_token, mask, "mean")


def test_gradient_accumulation_with_denominator_matches_full_batch() -> None:
    s, t = logits(4, T, V, seed=32), logits(4, T, V, seed=33)
    mask = torch.rand(4, T, generator=torch.Generator().manual_seed(3)) > 0.3
    for mode, denom in (("token", float(mask.sum())), ("sequence", float((mask.sum(-1) > 0).sum()))):
        full = compute_loss("skew_reverse_kl", s, t, mask=mask, reduction=mode)
        parts = sum(
            compute_loss(
                "skew_reverse_kl", s[i : i + 2], t[i : i + 2], mask=mask[i : i + 2], reduction=mode, denominator=denom
            )
            for i in (0, 2)
        )
        torch.testing.assert_close(parts, full, rtol=1e-12, atol=0)


def test_registry_refuses_unknown_names_and_keywords() -> None:
    with pytest.raises(ValueError, match="unknown loss 'skl'"):
        check_loss_kwargs("skl", {})
    with pytest.raises(ValueError) as err:
        check_loss_kwargs("skew_reverse_kl", {"lam": 0.1})
    assert (
        str(err.value)
        == "loss 'skew_reverse_kl' got unknown keyword argument 'lam'; allowed: alpha, stop_grad_mixture"
    )
    with pytest.raises(ValueError, match="'labels'"):
        check_loss_kwargs("nll", {"labels": None})  # batch inputs are not config hyperparameters
    assert LOSSES["distillm2_contrastive"].hparams == {"alpha_teacher": 0.1, "alpha_student": 0.1, "beta": 0.5}
    assert LOSSES["dpkd"].pairwise and not LOSSES["nll"].needs_teacher and LOSSES["forward_kl"].needs_teacher
    s, t = logits(B, T, V, seed=34), logits(B, T, V, seed=35)
    torch.testing.assert_close(get_loss("skew_forward_kl", alpha=0.3)(s, t), skew_forward_kl(s, t, alpha=0.3))


@pytest.mark.parametrize("bad", [-0.1, 1.5, math.nan, "0.1", True])
def test_bad_hyperparameter_values_raise(bad) -> None:
    s = logits(B, T, V)
    with pytest.raises(ValueError, match="alpha"):
        skew_forward_kl(s, s, alpha=bad)


def test_generalized_jsd_matches_trl() -> None:
    """TRL's GKDTrainer.generalized_jsd_loss (trl.experimental.gkd in TRL 1.x) on random logits, with and without
    a label mask (TRL's "batchmean" with labels is our "token" reduction)."""
    pytest.importorskip("trl")
    gkd = pytest.importorskip("trl.experimental.gkd")
    s, t = logits(2, 5, 13, seed=36, dtype=torch.float32), logits(2, 5, 13, seed=37, dtype=torch.float32)
    labels = torch.randint(0, 13, (2, 5), generator=torch.Generator().manual_seed(4))
    labels[0, :2] = -100
    for beta in (0.0, 0.1, 0.5, 0.9, 1.0):
        theirs = gkd.GKDTrainer.generalized_jsd_loss(s, t, beta=beta, reduction="sum")
        torch.testing.assert_close(generalized_jsd(s, t, beta=beta).sum(), theirs, rtol=1e-5, atol=1e-6)
        theirs = gkd.GKDTrainer.generalized_jsd_loss(s, t, labels=labels, beta=beta)
        ours = compute_loss("generalized_jsd", s, t, mask=labels != -100, reduction="token", beta=beta)
        torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(
    "name, kwargs, message",
    [
        ("skew_reverse_kl", {"alpha": 2.0}, "alpha=2.0 is out of range (must be in [0, 1])"),
        ("skew_forward_kl", {"alpha": math.nan}, "alpha=nan is out of range"),
        ("generalized_jsd", {"beta": -0.1}, "beta=-0.1 is out of range (must be in [0, 1])"),
        ("dpkd", {"beta": 0.0}, "beta=0.0 is out of range (must be > 0)"),
        ("distillm2_contrastive", {"alpha_student": 1.5}, "alpha_student=1.5 is out of range"),
        ("skew_reverse_kl", {"stop_grad_mixture": 1}, "stop_grad_mixture must be true or false, got 1"),
        ("generalized_jsd", {"beta": "0.5"}, "beta must be a number, got '0.5'"),
    ],
)
def test_loss_hyperparameters_are_checked_against_their_range_when_the_config_loads(name, kwargs, message) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        check_loss_kwargs(name, kwargs)
    assert check_loss_kwargs("distillm2_contrastive", {"beta": 3.0}).pairwise is False  # unbounded above
