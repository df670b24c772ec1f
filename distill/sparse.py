"""Sparse teacher targets: the teacher's top-k log-probabilities plus the log of the remaining mass.

A cached teacher costs ``k * (4 + 4) + 4`` bytes per token on disk (int32 ids, float32 log-probs, float32 tail)
instead of ``4 V``: 1 KiB at k = 128 against 501 KiB for a 128k vocabulary.

**How the divergences use it (tail bucket).** Let ``K`` be the teacher's top-k ids at a position. Both distributions
are coarsened to ``k + 1`` categories: the ``k`` ids of ``K`` and one bucket for everything else,
``p_rest = 1 - sum_K p`` (stored) and ``q_rest = 1 - sum_K q`` (computed from the student's full logits, exactly, as
a logsumexp over the ids outside ``K``). Every divergence of :mod:`distill.losses` then runs unchanged on the two
coarsened distributions (:func:`coarsen`), so no assumption is made about how the teacher spreads its tail.

**Approximation error, exactly.** For a KL ``KL(x || y)`` the chain rule over the partition ``{K, tail}`` gives

    KL(x || y) = KL(x_coarse || y_coarse) + x_rest * KL(x_tail || y_tail)

where ``x_tail = x / x_rest`` restricted to the tail. The mixtures of SKL/SRKL/JSD commute with coarsening, so:

* FKL:  full - sparse = ``p_rest KL(p_tail || q_tail)``;  RKL: ``q_rest KL(q_tail || p_tail)``.
* SKL^a: ``p_rest KL(p_tail || m_tail)``, ``m = a p + (1-a) q``;  SRKL^a: ``q_rest KL(q_tail || m_tail)``,
  ``m = (1-a) p + a q``;  JSD_b: ``b p_rest KL(p_tail || m_tail) + (1-b) q_rest KL(q_tail || m_tail)``.
* TV: ``1/2 (sum_tail |p - q| - |p_rest - q_rest|)``.

Every error is >= 0 (the sparse value is a lower bound, by the data-processing inequality) and vanishes when the
tail carries no mass in the relevant model. The gradient matches the full one on the top-k ids and on the total
tail mass, but carries no signal about how the student shapes its mass *inside* the tail. ``tests/test_sparse.py``
checks these identities in float64; ``results/benchmarks/losses.md`` reports the errors at k = 8, 32, 128.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

FORMAT = "distillm-bench/sparse-teacher/v1"


def upcast(x: Tensor) -> Tensor:
    """The dtype every loss computes in: float32, or float64 for float64 inputs (used by the float64 tests)."""
    return x if x.dtype == torch.float64 else x.float()


@dataclass(frozen=True)
class SparseTarget:
    """Teacher top-k log-probabilities per position; leading dims are usually ``[B, T]``.

    ``indices`` ``[..., k]`` int64: top-k token ids, by decreasing teacher probability.
    ``logprobs`` ``[..., k]`` float: ``log p`` of those ids, normalised over the full vocabulary.
    ``log_rest`` ``[...]`` float: ``log(1 - sum_k p)``, the log of the teacher mass outside the top-k (``-inf``
    when there is none). ``vocab_size``: V of the teacher that produced it.
    """

    indices: Tensor
    logprobs: Tensor
    log_rest: Tensor
    vocab_size: int

    def __post_init__(self) -> None:
        if self.indices.shape != self.logprobs.shape or self.indices.shape[:-1] != self.log_rest.shape:
            raise ValueError(
                f"SparseTarget shapes disagree: indices {tuple(self.indices.shape)}, logprobs "
                f"{tuple(self.logprobs.shape)}, log_rest {tuple(self.log_rest.shape)}"
            )
        if self.indices.dtype.is_floating_point or not 0 < self.k <= self.vocab_size:
            raise ValueError(f"SparseTarget needs integer indices and 0 < k <= vocab_size; got k={self.k}")
        if self.indices.dtype != torch.int64:  # gather/scatter need int64
            object.__setattr__(self, "indices", self.indices.long())

    @property
    def k(self) -> int:
        return self.indices.shape[-1]

    @property
    def shape(self) -> torch.Size:
        """Leading (position) shape, e.g. ``[B, T]``."""
        return self.log_rest.shape

    def __getitem__(self, key) -> SparseTarget:
        """Index the leading (position) dims only, e.g. ``target[rows]`` or ``target[:, :-1]``."""
        return SparseTarget(self.indices[key], self.logprobs[key], self.log_rest[key], self.vocab_size)

    def reshape(self, *shape: int) -> SparseTarget:
        """Reshape the leading dims, e.g. ``target.reshape(-1)`` for a flat token axis."""
        return SparseTarget(
            self.indices.reshape(*shape, self.k),
            self.logprobs.reshape(*shape, self.k),
            self.log_rest.reshape(*shape),
            self.vocab_size,
        )

    def to(self, device: torch.device | str) -> SparseTarget:
        return SparseTarget(
            self.indices.to(device), self.logprobs.to(device), self.log_rest.to(device), self.vocab_size
        )


@torch.no_grad()
def sparse_target_from_logits(teacher_logits: Tensor, k: int, mask: Tensor | None = None) -> SparseTarget:
    """Top-k teacher target from full teacher logits ``[..., V]`` (computed in float32).

    ``mask`` (``[...]`` bool, optional) marks positions that will be trained; the others are stored as a uniform
    distribution, whatever their logits (padding garbage). A trained position with NaN or ``+inf`` logits raises.
    A position whose logits are all ``-inf`` is stored as uniform too (it has no distribution to cache).
    """
    vocab = teacher_logits.shape[-1]
    if isinstance(k, bool) or not isinstance(k, int) or not 0 < k <= vocab:
        raise ValueError(f"k must be an int in [1, V={vocab}]; got {k!r}")
    t = upcast(teacher_logits)
    row_max = t.amax(-1)
    empty = row_max == -math.inf
    if mask is not None:
        empty = empty | ~mask.bool()
    bad = ~torch.isfinite(row_max) & ~empty
    if bool(bad.any()):
        raise ValueError(f"teacher logits are NaN or +inf at {int(bad.sum())} trained position(s)")
    if bool(empty.any()):
        t = torch.where(empty[..., None], 0.0, t)
    log_z = torch.logsumexp(t, -1, keepdim=True)
    values, indices = t.topk(k, dim=-1, sorted=True)
    log_rest = torch.logsumexp(t.scatter(-1, indices, -math.inf), -1) - log_z.squeeze(-1)
    return SparseTarget(indices, values - log_z, log_rest, vocab)


@torch.no_grad()
def sparse_target_from_hidden(
    hidden: Tensor, weight: Tensor, k: int, chunk_size: int = 256, mask: Tensor | None = None
) -> SparseTarget:
    """Top-k target from teacher hidden states ``[..., H]`` and ``lm_head`` weight ``[V, H]``, chunk by chunk over
    positions, without materialising the full ``[..., V]`` logits."""
    lead = hidden.shape[:-1]
    flat = hidden.reshape(-1, hidden.shape[-1])
    flat_mask = None if mask is None else mask.reshape(-1)
    parts = [
        sparse_target_from_logits(
            flat[i : i + chunk_size] @ weight.T, k, None if flat_mask is None else flat_mask[i : i + chunk_size]
        )
        for i in range(0, flat.shape[0], chunk_size)
    ]
    return SparseTarget(
        torch.cat([p.indices for p in parts]).reshape(*lead, k),
        torch.cat([p.logprobs for p in parts]).reshape(*lead, k),
        torch.cat([p.log_rest for p in parts]).reshape(lead),
        weight.shape[0],
    )


def coarsen(student_logits: Tensor, target: SparseTarget) -> tuple[Tensor, Tensor, Tensor | None]:
    """Student and teacher log-probabilities over the ``k + 1`` categories ``(top-k ids, tail)``.

    Computed in :func:`upcast`'s dtype.

    Returns ``(logq, logp, empty)``: ``logq`` keeps the student's gradient; ``empty`` ``[...]`` marks positions where
    the student has no finite logit (their coarsened student is uniform; the caller zeroes their loss), else None.
    """
    if student_logits.shape[:-1] != target.shape or student_logits.shape[-1] != target.vocab_size:
        raise ValueError(
            f"student logits {tuple(student_logits.shape)} do not match the sparse target "
            f"{tuple(target.shape)} with V={target.vocab_size}"
        )
    s = upcast(student_logits)
    empty = None
    if bool(s.amin() == -math.inf):
        empty = s.amax(-1) == -math.inf
        if bool(empty.any()):
            s = torch.where(empty[..., None], 0.0, s)
        else:
            empty = None
    top = s.gather(-1, target.indices)
    tail_logits = s.scatter(-1, target.indices, -math.inf)
    tail_empty = tail_logits.amax(-1) == -math.inf  # k = V, or -inf everywhere outside the top-k
    has_empty_tail = bool(tail_empty.any())
    if has_empty_tail:
        tail_logits = torch.where(tail_empty[..., None], 0.0, tail_logits)
    tail = torch.logsumexp(tail_logits, -1)
    if has_empty_tail:
        tail = torch.where(tail_empty, -math.inf, tail)
    logq = torch.log_softmax(torch.cat([top, tail[..., None]], -1), -1)
    logp = torch.cat([target.logprobs, target.log_rest[..., None]], -1).to(s.dtype)
    return logq, logp, empty


def save_sparse_target(target: SparseTarget, path: str | Path, metadata: dict[str, str] | None = None) -> None:
    """Write ``target`` to a safetensors file atomically (ids as int32, log-probs in their own dtype)."""
    from safetensors.torch import save_file

    from distill.atomic import atomic_path

    meta = {"format": FORMAT, "vocab_size": str(target.vocab_size), "k": str(target.k), **(metadata or {})}
    tensors = {
        "indices": target.indices.to(torch.int32).contiguous(),
        "logprobs": target.logprobs.contiguous(),
        "log_rest": target.log_rest.contiguous(),
    }
    with atomic_path(path, suffix=".safetensors") as tmp:
        save_file(tensors, str(tmp), metadata=meta)


def load_sparse_target(path: str | Path, device: str = "cpu") -> SparseTarget:
    """Read a target written by :func:`save_sparse_target`."""
    from safetensors import safe_open

    with safe_open(str(path), framework="pt", device=device) as fh:
        meta = fh.metadata() or {}
        if meta.get("format") != FORMAT:
            raise ValueError(
                f"{path}: not a sparse teacher target (format {meta.get('format')!r}, expected {FORMAT!r})"
            )
        return SparseTarget(
            fh.get_tensor("indices").long(),
            fh.get_tensor("logprobs"),
            fh.get_tensor("log_rest"),
            int(meta["vocab_size"]),
        )
