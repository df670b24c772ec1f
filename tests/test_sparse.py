"""Sparse (top-k + tail) teacher targets: construction, storage, approximation error against the full teacher."""

from __future__ import annotations

import math

import pytest
import torch

from distill.losses import (
    compute_loss,
    distillm2_contrastive,
    dpkd,
    forward_kl,
    generalized_jsd,
    reverse_kl,
    skew_forward_kl,
    skew_reverse_kl,
    total_variation,
)
from distill.sparse import (
    SparseTarget,
    coarsen,
    load_sparse_target,
    save_sparse_target,
    sparse_target_from_hidden,
    sparse_target_from_logits,
)

B, T, V = 2, 3, 40


def logits(seed: int, scale: float = 3.0, dtype=torch.float64) -> torch.Tensor:
    return (torch.randn(B, T, V, generator=torch.Generator().manual_seed(seed), dtype=torch.float64) * scale).to(dtype)


def kl(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return torch.where(x > 0, x * (x.log() - y.log()), 0.0).sum(-1)


def tail_parts(s: torch.Tensor, t: torch.Tensor, k: int) -> tuple[torch.Tensor, ...]:
    """Teacher and student probabilities on the tail (outside the teacher's top-k) and their tail masses."""
    p, q = t.softmax(-1), s.softmax(-1)
    tail = torch.ones_like(p, dtype=torch.bool).scatter(-1, t.topk(k, -1).indices, False)
    p_tail, q_tail = torch.where(tail, p, 0.0), torch.where(tail, q, 0.0)
    return p_tail, q_tail, p_tail.sum(-1), q_tail.sum(-1)


def normalise(x: torch.Tensor) -> torch.Tensor:
    return x / x.sum(-1, keepdim=True)


def test_target_from_logits_is_normalised_and_sorted() -> None:
    t = logits(0)
    target = sparse_target_from_logits(t, k=6)
    assert target.k == 6 and target.shape == (B, T) and target.vocab_size == V
    assert bool((target.logprobs[..., :-1] >= target.logprobs[..., 1:]).all())
    total = torch.logsumexp(torch.cat([target.logprobs, target.log_rest[..., None]], -1), -1)
    torch.testing.assert_close(total, torch.zeros(B, T, dtype=torch.float64), rtol=0, atol=1e-12)
    torch.testing.assert_close(target.logprobs, t.log_softmax(-1).gather(-1, target.indices))
    assert bool((sparse_target_from_logits(t, k=V).log_rest == -math.inf).all())


def test_target_construction_rejects_nan_but_not_at_masked_positions() -> None:
    t = logits(1)
    t[0, 1, 3] = math.nan
    with pytest.raises(ValueError, match="NaN or \\+inf at 1 trained"):
        sparse_target_from_logits(t, k=4)
    mask = torch.ones(B, T, dtype=torch.bool)
    mask[0, 1] = False
    target = sparse_target_from_logits(t, k=4, mask=mask)
    assert torch.isfinite(target.logprobs).all() and torch.isfinite(target.log_rest).all()
    with pytest.raises(ValueError, match="k must be"):
        sparse_target_from_logits(t, k=V + 1)


def test_target_from_hidden_equals_target_from_logits() -> None:
    g = torch.Generator().manual_seed(2)
    hidden, weight = torch.randn(B, T, 5, generator=g), torch.randn(V, 5, generator=g)
    a, b = (
        sparse_target_from_hidden(hidden, weight, k=7, chunk_size=4),
        sparse_target_from_logits(hidden @ weight.T, 7),
    )
    assert torch.equal(a.indices, b.indices)
    torch.testing.assert_close(a.logprobs, b.logprobs)
    torch.testing.assert_close(a.log_rest, b.log_rest)


def test_save_and_load_round_trip(tmp_path) -> None:
    target = sparse_target_from_logits(logits(3, dtype=torch.float32), k=5)
    path = tmp_path / "teacher.safetensors"
    save_sparse_target(target, path, metadata={"teacher": "tiny"})
    loaded = load_sparse_target(path)
    assert loaded.vocab_size == V and loaded.indices.dtype == torch.int64
    for name in ("indices", "logprobs", "log_rest"):
        assert torch.equal(getattr(loaded, name), getattr(target, name))
    from safetensors.torch import save_file

    save_file({"x": torch.zeros(1)}, str(tmp_path / "other.safetensors"))
    with pytest.raises(ValueError, match="not a sparse teacher target"):
        load_sparse_target(tmp_path / "other.safetensors")


@pytest.mark.parametrize("k", [1, 4, 15])
def test_approximation_error_equals_the_chain_rule_identity(k: int) -> None:
    """full - sparse = (tail mass) x (KL between the renormalised tails), as documented in distill/sparse.py."""
    s, t = logits(4), logits(5)
    target = sparse_target_from_logits(t, k)
    p_t, q_t, p_rest, q_rest = tail_parts(s, t, k)
    a, b = 0.1, 0.3
    cases = {
        "fkl": (forward_kl(s, t), forward_kl(s, target), p_rest * kl(normalise(p_t), normalise(q_t))),
        "rkl": (reverse_kl(s, t), reverse_kl(s, target), q_rest * kl(normalise(q_t), normalise(p_t))),
        "skl": (
            skew_forward_kl(s, t, alpha=a),
            skew_forward_kl(s, target, alpha=a),
            p_rest * kl(normalise(p_t), normalise(a * p_t + (1 - a) * q_t)),
        ),
        "srkl": (
            skew_reverse_kl(s, t, alpha=a),
            skew_reverse_kl(s, target, alpha=a),
            q_rest * kl(normalise(q_t), normalise((1 - a) * p_t + a * q_t)),
        ),
        "jsd": (
            generalized_jsd(s, t, beta=b),
            generalized_jsd(s, target, beta=b),
            b * p_rest * kl(normalise(p_t), normalise(b * p_t + (1 - b) * q_t))
            + (1 - b) * q_rest * kl(normalise(q_t), normalise(b * p_t + (1 - b) * q_t)),
        ),
        "tv": (
            total_variation(s, t),
            total_variation(s, target),
            0.5 * ((p_t - q_t).abs().sum(-1) - (p_rest - q_rest).abs()),
        ),
    }
    for name, (full, sparse, error) in cases.items():
        torch.testing.assert_close(full - sparse, error, rtol=1e-9, atol=1e-12, msg=name)
        assert bool((sparse <= full + 1e-12).all()), name  # a lower bound (data-processing inequality)


def test_error_shrinks_with_k_and_vanishes_at_full_vocabulary() -> None:
    s, t = logits(6), logits(7, scale=4.0)
    full = skew_reverse_kl(s, t)
    errors = [float((full - skew_reverse_kl(s, sparse_target_from_logits(t, k))).abs().max()) for k in (1, 4, 16, 39)]
    assert errors == sorted(errors, reverse=True) and errors[0] > 1e-3
    torch.testing.assert_close(skew_reverse_kl(s, sparse_target_from_logits(t, V)), full, rtol=1e-12, atol=1e-12)


def test_peaked_teacher_is_well_approximated() -> None:
    """An LM-like teacher (Zipf head, long tail), student = teacher + noise: the relative error of every divergence
    falls with k and is under 1 % at k = 16, where the teacher keeps ~2e-5 of its mass in the tail. (At k = 2 it is
    ~50 %: the tail terms are small in absolute terms but so is the whole divergence.)"""
    g = torch.Generator().manual_seed(8)
    base = -4.5 * torch.arange(V, dtype=torch.float64).log1p()
    noise = torch.randn(B, T, V, generator=g, dtype=torch.float64)
    t = base[torch.randperm(V, generator=g)].expand(B, T, V) + 0.1 * noise
    s = t + 0.8 * torch.randn(B, T, V, generator=g, dtype=torch.float64)
    for fn in (forward_kl, reverse_kl, skew_forward_kl, skew_reverse_kl, generalized_jsd, total_variation):
        rel = [float(((fn(s, t) - fn(s, sparse_target_from_logits(t, k))) / fn(s, t)).abs().max()) for k in (2, 8, 16)]
        assert rel == sorted(rel, reverse=True) and rel[-1] < 0.01, (fn.__name__, rel)


def test_gradients_finite_with_neg_inf_and_full_k() -> None:
    s, t = logits(9), logits(10)
    s[0, 0, :5] = -math.inf  # student -inf inside and outside the teacher's top-k
    t[1, 1, 10:] = -math.inf  # teacher tail empty at one position
    s = s.requires_grad_()
    for k in (3, V):
        target = sparse_target_from_logits(t, k)
        for fn in (forward_kl, reverse_kl, skew_forward_kl, skew_reverse_kl, generalized_jsd, total_variation):
            out = fn(s, target)
            (g,) = torch.autograd.grad(out.sum(), s)
            assert torch.isfinite(out).all() and torch.isfinite(g).all(), (fn.__name__, k)


def test_coarsen_keeps_the_student_distribution() -> None:
    s, t = logits(11), logits(12)
    logq, logp, empty = coarsen(s, sparse_target_from_logits(t, 5))
    assert logq.shape == (B, T, 6) and empty is None
    torch.testing.assert_close(logq.exp().sum(-1), torch.ones(B, T, dtype=torch.float64))
    torch.testing.assert_close(logp.exp().sum(-1), torch.ones(B, T, dtype=torch.float64))


def test_contrastive_and_compute_loss_accept_sparse_targets_but_dpkd_refuses() -> None:
    s, t = logits(13), logits(14)
    target = sparse_target_from_logits(t, 5)
    roles = torch.tensor([False, True])
    out = distillm2_contrastive(s, target, is_student_response=roles)
    torch.testing.assert_close(out[0], 2 * 0.5 * skew_forward_kl(s[:1], target[:1])[0])
    torch.testing.assert_close(out[1], 2 * 0.5 * skew_reverse_kl(s[1:], target[1:])[0])
    mask = torch.ones(B, T, dtype=torch.bool)
    assert torch.isfinite(compute_loss("skew_reverse_kl", s, target, mask=mask))
    with pytest.raises(ValueError, match="SparseTarget"):
        dpkd(s, target, labels=torch.zeros(B, T, dtype=torch.long), is_student_response=roles)
    with pytest.raises(ValueError, match="shapes disagree"):
        SparseTarget(target.indices, target.logprobs[..., :2], target.log_rest, V)
