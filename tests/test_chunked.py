"""The chunked fused-linear path against the full-logits path: values and gradients, for every registered loss."""

from __future__ import annotations

import math

import pytest
import torch

from distill.chunked import DEFAULT_LOSS_CHUNK_BYTES, chunked_loss, default_chunk_size
from distill.losses import LOSSES, LossSpec, compute_loss
from distill.sparse import sparse_target_from_logits

B, T, H, V = 4, 6, 8, 37


def make(dtype=torch.float32, seed: int = 0) -> dict:
    g = torch.Generator().manual_seed(seed)
    mask = torch.rand(B, T, generator=g) > 0.25
    mask[:, 0] = True
    return {
        "hs": torch.randn(B, T, H, generator=g, dtype=torch.float64).to(dtype).requires_grad_(),
        "ws": (torch.randn(V, H, generator=g, dtype=torch.float64) * 0.7).to(dtype).requires_grad_(),
        "ht": torch.randn(B, T, H + 2, generator=g, dtype=torch.float64).to(dtype),
        "wt": (torch.randn(V, H + 2, generator=g, dtype=torch.float64) * 0.7).to(dtype),
        "mask": mask,
        "labels": torch.randint(0, V, (B, T), generator=g),
        "roles": torch.tensor([False, True, False, True]),
    }


def batch_kwargs(name: str, x: dict) -> dict:
    out = {}
    if "labels" in LOSSES[name].batch_inputs:
        out["labels"] = x["labels"]
    if "is_student_response" in LOSSES[name].batch_inputs:
        out["is_student_response"] = x["roles"]
    return out


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    """max |a - b| / max |b|: the relative error used throughout (elementwise ratios blow up near 0)."""
    a, b = a.detach().double(), b.detach().double()
    return float((a - b).abs().max() / b.abs().max().clamp_min(1e-30))


def naive(name: str, x: dict, reduction: str = "token", teacher_logits=None, **hp) -> tuple:
    s_logits = x["hs"] @ x["ws"].T
    t_logits = (x["ht"] @ x["wt"].T) if teacher_logits is None else teacher_logits
    loss = compute_loss(name, s_logits, t_logits, mask=x["mask"], reduction=reduction, **batch_kwargs(name, x), **hp)
    return (loss, *torch.autograd.grad(loss, [x["hs"], x["ws"]]))


def chunked(
    name: str, x: dict, reduction: str = "token", chunk_size: int = 5, teacher: dict | None = None, sub: int = 2, **hp
):
    teacher = teacher if teacher is not None else {"teacher_hidden": x["ht"], "teacher_weight": x["wt"]}
    loss = chunked_loss(
        name, x["hs"], x["ws"], mask=x["mask"], reduction=reduction, chunk_size=chunk_size, loss_chunk_size=sub,
        **teacher, **batch_kwargs(name, x), **hp,
    )  # fmt: skip
    return (loss, *torch.autograd.grad(loss, [x["hs"], x["ws"]]))


@pytest.mark.parametrize("name", sorted(LOSSES))
@pytest.mark.parametrize("reduction", ["token", "sequence"])
def test_chunked_matches_naive_float32(name: str, reduction: str) -> None:
    x = make()
    ref, got = naive(name, x, reduction), chunked(name, x, reduction)
    assert got[0].dtype == torch.float32
    for a, b in zip(got, ref, strict=True):
        assert rel_err(a, b) <= 1e-5, (name, rel_err(a, b))


@pytest.mark.parametrize("name", sorted(LOSSES))
def test_chunked_matches_naive_float64_with_teacher_logits(name: str) -> None:
    x = make(torch.float64, seed=1)
    t_logits = x["ht"] @ x["wt"].T
    ref = naive(name, x, "sequence", teacher_logits=t_logits)
    got = chunked(name, x, "sequence", chunk_size=3, teacher={"teacher_logits": t_logits})
    for a, b in zip(got, ref, strict=True):
        assert rel_err(a, b) <= 1e-12, (name, rel_err(a, b))


@pytest.mark.parametrize("name", sorted(n for n, s in LOSSES.items() if not s.pairwise))
def test_chunked_matches_naive_with_sparse_teacher(name: str) -> None:
    x = make(seed=2)
    target = sparse_target_from_logits(x["ht"] @ x["wt"].T, k=5)
    ref = naive(name, x, teacher_logits=target)
    got = chunked(name, x, chunk_size=4, teacher={"teacher_logits": target})
    for a, b in zip(got, ref, strict=True):
        assert rel_err(a, b) <= 1e-5, (name, rel_err(a, b))


def test_hyperparameters_and_per_sample_alphas_pass_through() -> None:
    x = make(seed=3)
    hp = {"alpha_teacher": torch.tensor([0.05, 0.1, 0.02, 0.08]), "alpha_student": 0.03, "beta": 0.7}
    ref = naive("distillm2_contrastive", x, "sequence", **hp)
    got = chunked("distillm2_contrastive", x, "sequence", **hp)
    for a, b in zip(got, ref, strict=True):
        assert rel_err(a, b) <= 1e-5
    for name, hp in (("skew_reverse_kl", {"alpha": 0.4, "stop_grad_mixture": True}), ("dpkd", {"beta": 0.5})):
        for a, b in zip(chunked(name, x, **hp), naive(name, x, **hp), strict=True):
            assert rel_err(a, b) <= 1e-5


@pytest.mark.parametrize(("chunk_size", "sub"), [(1, 1), (7, 3), (7, 7), (B * T + 5, 4), (B * T + 5, B * T + 5)])
def test_chunk_size_does_not_change_the_result(chunk_size: int, sub: int) -> None:
    x = make(torch.float64, seed=4)
    ref = chunked("skew_forward_kl", x, chunk_size=2, sub=1)
    for a, b in zip(chunked("skew_forward_kl", x, chunk_size=chunk_size, sub=sub), ref, strict=True):
        assert rel_err(a, b) <= 1e-13


def test_chunks_never_hold_more_than_chunk_size_tokens(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[tuple[int, ...]] = []

    def spy(student_logits: torch.Tensor, teacher_logits: torch.Tensor) -> torch.Tensor:
        seen.append(tuple(student_logits.shape))
        return LOSSES["forward_kl"].fn(student_logits, teacher_logits)

    monkeypatch.setitem(LOSSES, "spy", LossSpec(spy))
    x = make(seed=5)
    chunked("spy", x, chunk_size=8, sub=3)
    n_active = int(x["mask"].sum())
    assert sum(shape[0] for shape in seen) == n_active and max(shape[0] for shape in seen) <= 3
    assert all(shape[1:] == (1, V) for shape in seen)


def test_masked_tokens_are_skipped_so_garbage_cannot_leak() -> None:
    x = make(seed=6)
    t_logits = (x["ht"] @ x["wt"].T).detach()
    ref = chunked("skew_reverse_kl", x, teacher={"teacher_logits": t_logits})
    garbage = t_logits.clone()
    garbage[~x["mask"]] = math.nan
    got = chunked("skew_reverse_kl", x, teacher={"teacher_logits": garbage})
    for a, b in zip(got, ref, strict=True):
        assert torch.equal(a, b)


def test_grad_output_scaling_and_no_teacher_gradient() -> None:
    x = make(seed=7)
    x["wt"].requires_grad_()
    loss = chunked_loss(
        "generalized_jsd", x["hs"], x["ws"], mask=x["mask"], teacher_hidden=x["ht"], teacher_weight=x["wt"]
    )
    (3.0 * loss).backward()
    g_h, g_w = x["hs"].grad.clone(), x["ws"].grad.clone()
    assert x["wt"].grad is None
    _, ref_h, ref_w = chunked("generalized_jsd", x)
    assert rel_err(g_h, 3 * ref_h) <= 1e-6 and rel_err(g_w, 3 * ref_w) <= 1e-6


def test_bf16_hidden_states_and_head() -> None:
    x32, x16 = make(seed=8), make(torch.bfloat16, seed=8)
    loss16, g_h, g_w = chunked("skew_forward_kl", x16)
    loss32 = chunked("skew_forward_kl", x32)[0]
    assert loss16.dtype == torch.float32 and g_h.dtype == torch.bfloat16 and g_w.dtype == torch.bfloat16
    assert torch.isfinite(g_h).all() and torch.isfinite(g_w).all()
    assert abs(float(loss16.detach()) - float(loss32.detach())) <= 0.05 * abs(float(loss32.detach()))
    ref = naive("skew_forward_kl", x16)
    assert rel_err(loss16, ref[0]) <= 1e-5 and rel_err(g_h, ref[1]) <= 2e-2 and rel_err(g_w, ref[2]) <= 2e-2


def test_two_dimensional_hidden_is_one_sequence_and_errors_are_one_line() -> None:
    x = make(seed=9)
    flat = chunked_loss(
        "forward_kl", x["hs"].reshape(B * T, H), x["ws"], mask=x["mask"].reshape(-1),
        teacher_hidden=x["ht"].reshape(B * T, -1), teacher_weight=x["wt"],
    )  # fmt: skip
    assert rel_err(flat, chunked("forward_kl", x)[0]) <= 1e-6
    with pytest.raises(ValueError, match="needs a teacher"):
        chunked_loss("forward_kl", x["hs"], x["ws"], mask=x["mask"])
    with pytest.raises(ValueError, match="not both"):
        chunked_loss(
            "forward_kl",
            x["hs"],
            x["ws"],
            mask=x["mask"],
            teacher_hidden=x["ht"],
            teacher_weight=x["wt"],
            teacher_logits=x["ht"],
        )
    with pytest.raises(ValueError, match="unknown keyword argument 'alpha'"):
        chunked("forward_kl", x, alpha=0.1)


def test_default_chunk_size() -> None:
    assert default_chunk_size(128256) == 256
    assert default_chunk_size(128256, DEFAULT_LOSS_CHUNK_BYTES) == 16
    assert default_chunk_size(10**9) == 8


def test_strided_teacher_logits_and_shape_checks() -> None:
    """A shifted view of teacher logits (``logits[:, :-1]``) is read in place; a wrong position count raises."""
    x = make(seed=10)
    t_full = torch.randn(B, T + 1, V, generator=torch.Generator().manual_seed(11))
    shifted = t_full[:, :-1]
    assert not shifted.is_contiguous()
    ref = naive("skew_forward_kl", x, teacher_logits=shifted)
    got = chunked("skew_forward_kl", x, teacher={"teacher_logits": shifted})
    for a, b in zip(got, ref, strict=True):
        assert rel_err(a, b) <= 1e-5
    with pytest.raises(ValueError, match="cover the"):
        chunked("skew_forward_kl", x, teacher={"teacher_logits": t_full})


def test_fp32_hidden_under_cpu_bf16_autocast():
    """The trainer's mixed_precision=bf16 path: fp32 master weights, GEMMs autocast to bf16 (once a dtype clash)."""
    x = make()
    ref = naive("forward_kl", x)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = chunked_loss(
            "forward_kl", x["hs"], x["ws"], mask=x["mask"], teacher_hidden=x["ht"], teacher_weight=x["wt"],
            chunk_size=5, loss_chunk_size=2,
        )  # fmt: skip
    gh, gw = torch.autograd.grad(loss, [x["hs"], x["ws"]])
    assert gh.dtype == torch.float32 and gw.dtype == torch.float32
    assert rel_err(loss, ref[0]) < 0.05 and rel_err(gh, ref[1]) < 0.05 and rel_err(gw, ref[2]) < 0.05
