"""Memory-efficient losses over hidden states and ``lm_head``: chunk by chunk over tokens, never ``[N, V]`` at once.

The full-logits path materialises ``[N, V]`` logits for both models plus a handful of same-sized temporaries and
their gradients. Here, in the manner of Liger-Kernel's fused linear losses, a custom autograd function loops over
chunks of tokens in its forward pass: for each chunk it computes the student logits ``h_c @ W^T`` (and the teacher's,
from teacher hidden states and head, a slice of given teacher logits or a :class:`~distill.sparse.SparseTarget`),
the per-token loss of :mod:`distill.losses` and, through a local ``autograd.grad``, the gradient ``g_c`` of the
chunk's weighted loss with respect to its logits. It accumulates ``grad_h[c] = g_c @ W`` and ``grad_W += g_c^T h_c``
and frees the chunk. The backward pass only scales the stored gradients by ``grad_output``. Tokens are independent
in every loss, so the math is the same as the full path's; only float rounding differs.

Memory: ``grad_W`` (``[V, H]``, needed anyway) plus about ten ``[chunk, V]`` float32 temporaries. Masked tokens
(``mask == 0``) are skipped, so padding garbage cannot reach values or gradients. ``grad_W`` accumulates in the
weight's dtype, as Liger does. DPKD, a non-linear function of per-sequence means, uses a second autograd function
that returns per-token label log-probs and recomputes each chunk's logits in its backward pass.

The trainer's entry point is :func:`chunked_loss`, the twin of :func:`distill.losses.compute_loss`.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from distill.losses import IGNORE_INDEX, ReductionMode, check_loss_kwargs, token_weights
from distill.sparse import SparseTarget, upcast

#: Default budget for one chunk's ``[chunk, V]`` float32 logits. The loss holds about ten such temporaries.
DEFAULT_CHUNK_BYTES = 32 * 2**20


def default_chunk_size(vocab_size: int, budget_bytes: int = DEFAULT_CHUNK_BYTES) -> int:
    """Tokens per chunk so that one ``[chunk, V]`` float32 tensor fits ``budget_bytes`` (a multiple of 8, >= 8)."""
    return max(8, (budget_bytes // (4 * vocab_size)) // 8 * 8)


ChunkFn = Callable[[Tensor, Tensor], Tensor]  # (student logits [c, V] float32, token ids [c]) -> loss [c]


class _FusedLinearLoss(torch.autograd.Function):
    """``sum_i w_i * loss_i(h_i @ W^T)`` over the ``active`` tokens, with gradients computed during the forward."""

    @staticmethod
    def forward(ctx, hidden: Tensor, weight: Tensor, chunk_fn: ChunkFn, token_w: Tensor, active: Tensor, chunk: int):
        grad_h = torch.zeros_like(hidden) if hidden.requires_grad else None
        grad_w = torch.zeros_like(weight) if weight.requires_grad else None
        total = torch.zeros((), dtype=torch.float64, device=hidden.device)
        for start in range(0, active.numel(), chunk):
            idx = active[start : start + chunk]
            h = hidden[idx]
            logits = upcast(h @ weight.T).requires_grad_()
            with torch.enable_grad():
                loss = (chunk_fn(logits, idx) * token_w[idx]).sum()
                (g,) = torch.autograd.grad(loss, logits, allow_unused=True)
            total += loss.detach().double()
            if g is None:
                continue
            g = g.to(hidden.dtype)
            if grad_h is not None:
                grad_h.index_copy_(0, idx, g @ weight)
            if grad_w is not None:
                grad_w.addmm_(g.T, h)
        ctx.save_for_backward(grad_h, grad_w)
        return total.to(torch.float64 if hidden.dtype == torch.float64 else torch.float32)

    @staticmethod
    def backward(ctx, grad_out: Tensor):
        grad_h, grad_w = ctx.saved_tensors
        if not bool(grad_out == 1.0):
            grad_h = None if grad_h is None else grad_h * grad_out.to(grad_h.dtype)
            grad_w = None if grad_w is None else grad_w * grad_out.to(grad_w.dtype)
        return grad_h, grad_w, None, None, None, None


class _ChunkedLabelLogProbs(torch.autograd.Function):
    """Per-token ``log q(label)`` ``[N]`` (0 where ``label == -100``); the backward pass recomputes each chunk."""

    @staticmethod
    def forward(ctx, hidden: Tensor, weight: Tensor, labels: Tensor, chunk: int):
        out = upcast(hidden.new_zeros(labels.shape))
        active = (labels != IGNORE_INDEX).nonzero().squeeze(1)
        for start in range(0, active.numel(), chunk):
            idx = active[start : start + chunk]
            logits = upcast(hidden[idx] @ weight.T)
            out[idx] = logits.gather(-1, labels[idx, None]).squeeze(-1) - torch.logsumexp(logits, -1)
        ctx.save_for_backward(hidden, weight, labels, active)
        ctx.chunk = chunk
        return out

    @staticmethod
    def backward(ctx, grad_out: Tensor):
        hidden, weight, labels, active = ctx.saved_tensors
        grad_h = torch.zeros_like(hidden) if ctx.needs_input_grad[0] else None
        grad_w = torch.zeros_like(weight) if ctx.needs_input_grad[1] else None
        for start in range(0, active.numel(), ctx.chunk):
            idx = active[start : start + ctx.chunk]
            h = hidden[idx]
            g = -torch.softmax(upcast(h @ weight.T), -1)  # d log q(y) / d logits = onehot(y) - q
            g.scatter_add_(-1, labels[idx, None], torch.ones_like(idx, dtype=g.dtype)[:, None])
            g = (g * grad_out[idx, None].to(g.dtype)).to(hidden.dtype)
            if grad_h is not None:
                grad_h.index_copy_(0, idx, g @ weight)
            if grad_w is not None:
                grad_w.addmm_(g.T, h)
        return grad_h, grad_w, None, None


class _Teacher:
    """Per-chunk teacher logits ``[c, 1, V]`` (or a ``[c, 1]`` SparseTarget) from whichever source was given."""

    def __init__(self, n: int, hidden: Tensor | None, weight: Tensor | None, logits: Tensor | SparseTarget | None):
        if (hidden is None) != (weight is None):
            raise ValueError("teacher_hidden and teacher_weight must be given together")
        if hidden is not None and logits is not None:
            raise ValueError("give either teacher_hidden + teacher_weight or teacher_logits, not both")
        self.hidden = None if hidden is None else hidden.detach().reshape(n, -1)
        self.weight = None if weight is None else weight.detach()
        self.logits = logits
        if isinstance(logits, SparseTarget):
            self.logits = logits.reshape(n)
        elif isinstance(logits, Tensor):
            self.logits = logits.detach().reshape(n, logits.shape[-1])

    @property
    def given(self) -> bool:
        return self.hidden is not None or self.logits is not None

    @torch.no_grad()
    def __call__(self, idx: Tensor) -> Tensor | SparseTarget | None:
        if self.hidden is not None:
            return (self.hidden[idx] @ self.weight.T)[:, None, :]
        if isinstance(self.logits, SparseTarget):
            return self.logits[idx].reshape(-1, 1)
        return None if self.logits is None else self.logits[idx][:, None, :]

    @torch.no_grad()
    def label_logprobs(self, labels: Tensor, chunk: int) -> Tensor:
        if isinstance(self.logits, SparseTarget):
            raise ValueError("dpkd needs full teacher logits; a SparseTarget lacks log p of arbitrary label ids")
        out = torch.zeros(labels.shape, dtype=torch.float64, device=labels.device)
        active = (labels != IGNORE_INDEX).nonzero().squeeze(1)
        for start in range(0, active.numel(), chunk):
            idx = active[start : start + chunk]
            logits = upcast(self(idx)[:, 0, :])
            out[idx] = (logits.gather(-1, labels[idx, None]).squeeze(-1) - torch.logsumexp(logits, -1)).double()
        return out


def _per_token(value: object, name: str, batch: int, seq: int) -> object:
    """Flatten a tensor argument to one entry per token: ``[B]`` (per sequence) -> ``[B*T]``, ``[B, T]`` ->
    ``[B*T, 1]``, so that indexing a chunk of tokens gives the shapes a ``[c, 1, V]`` loss call expects."""
    if not isinstance(value, Tensor):
        return value
    if value.shape == (batch,):
        return value.detach()[:, None].expand(batch, seq).reshape(-1)
    if value.shape == (batch, seq):
        return value.reshape(-1, 1)
    raise ValueError(
        f"{name} must be a scalar, Tensor[B]={batch} or Tensor[B, T]={batch, seq}; got {tuple(value.shape)}"
    )


def chunked_loss(
    name: str,
    student_hidden: Tensor,
    student_weight: Tensor,
    *,
    mask: Tensor,
    teacher_hidden: Tensor | None = None,
    teacher_weight: Tensor | None = None,
    teacher_logits: Tensor | SparseTarget | None = None,
    reduction: ReductionMode = "token",
    denominator: float | None = None,
    labels: Tensor | None = None,
    is_student_response: Tensor | None = None,
    chunk_size: int | None = None,
    **hparams,
) -> Tensor:
    """Loss ``name`` of :data:`distill.losses.LOSSES`, reduced to a scalar, from the student's final hidden states.

    ``student_hidden`` is ``[B, T, H]`` (or ``[N, H]``, read as one sequence), ``student_weight`` the ``lm_head``
    weight ``[V, H]`` (no bias). The teacher is either ``teacher_hidden`` ``[B, T, H_t]`` + ``teacher_weight``
    ``[V, H_t]``, or ``teacher_logits`` ``[B, T, V]``, or a ``SparseTarget`` ``[B, T]`` given as ``teacher_logits``;
    it is never differentiated. ``mask``, ``reduction``, ``denominator``, ``labels``, ``is_student_response`` and the
    hyperparameters mean what they mean in :func:`distill.losses.compute_loss`, and the value and the gradients with
    respect to ``student_hidden`` and ``student_weight`` are the same up to float rounding. Tensor hyperparameters
    may be per sequence ``[B]`` (e.g. DistiLLM-2's per-sample alphas) or per token ``[B, T]``.
    ``chunk_size`` defaults to :func:`default_chunk_size`.
    """
    spec = check_loss_kwargs(name, hparams)
    if student_hidden.dim() == 2:
        student_hidden = student_hidden[None]
        teacher_hidden = None if teacher_hidden is None else teacher_hidden.reshape(1, -1, teacher_hidden.shape[-1])
    if student_hidden.dim() != 3 or student_weight.dim() != 2 or student_weight.shape[1] != student_hidden.shape[2]:
        raise ValueError(
            f"need student_hidden [B, T, H] and student_weight [V, H]; got {tuple(student_hidden.shape)} and "
            f"{tuple(student_weight.shape)}"
        )
    batch, seq, hid = student_hidden.shape
    n = batch * seq
    mask = mask.reshape(batch, seq).bool()
    chunk = chunk_size if chunk_size is not None else default_chunk_size(student_weight.shape[0])
    if isinstance(chunk, bool) or not isinstance(chunk, int) or chunk < 1:
        raise ValueError(f"chunk_size must be a positive int; got {chunk!r}")
    teacher = _Teacher(n, teacher_hidden, teacher_weight, teacher_logits)
    if spec.needs_teacher and not teacher.given:
        raise ValueError(f"loss {name!r} needs a teacher: teacher_hidden + teacher_weight, or teacher_logits")
    inputs = {"labels": labels, "is_student_response": is_student_response}
    for key in spec.batch_inputs:
        if inputs[key] is None:
            raise ValueError(f"loss {name!r} needs the batch input {key!r}")
    if labels is not None:
        inputs["labels"] = torch.where(mask, labels.reshape(batch, seq), IGNORE_INDEX)
    hidden = student_hidden.reshape(n, hid)

    if spec.pairwise:  # DPKD: per-sequence mean label log-probs, then a pairwise loss on [B] values
        flat_labels = inputs["labels"].reshape(n)
        count = (inputs["labels"] != IGNORE_INDEX).sum(-1).clamp_min(1)
        student = _ChunkedLabelLogProbs.apply(hidden, student_weight, flat_labels, chunk).reshape(batch, seq)
        teacher_lp = teacher.label_logprobs(flat_labels, chunk).reshape(batch, seq).to(student.dtype)
        out = spec.from_sequence_logps(
            student.sum(-1) / count, teacher_lp.sum(-1) / count, is_student_response, **hparams
        )
        return out.sum() / denominator if denominator is not None else out.mean()

    kwargs = {key: _per_token(inputs[key], key, batch, seq) for key in spec.batch_inputs}
    kwargs.update({key: _per_token(value, key, batch, seq) for key, value in hparams.items()})

    def chunk_fn(logits: Tensor, idx: Tensor) -> Tensor:
        args = {key: value[idx] if isinstance(value, Tensor) else value for key, value in kwargs.items()}
        return spec.fn(logits[:, None, :], teacher(idx), **args)[:, 0]

    token_w = token_weights(mask, reduction, denominator, upcast(hidden[:0]).dtype).reshape(n).to(hidden.device)
    active = mask.reshape(n).nonzero().squeeze(1).to(hidden.device)
    return _FusedLinearLoss.apply(hidden, student_weight, chunk_fn, token_w, active, chunk)
