"""Memory-efficient losses over hidden states and ``lm_head``: chunk by chunk over tokens, never ``[N, V]`` at once.

The full-logits path materialises ``[N, V]`` logits for both models plus a handful of same-sized temporaries and
their gradients. Here, in the manner of Liger-Kernel's fused linear losses, a custom autograd function loops over
blocks of tokens in its forward pass: for each block it computes the student logits ``h_c @ W^T`` and the teacher's
(from teacher hidden states and head, a slice of given teacher logits, or a :class:`~distill.sparse.SparseTarget`);
then, sub-chunk by sub-chunk, the per-token loss of :mod:`distill.losses` and, through a local ``autograd.grad``,
the gradient ``g_c`` of the weighted loss with respect to the logits. It accumulates ``grad_h[c] = g_c @ W`` and
``grad_W += g_c^T h_c`` and frees the block. The backward pass only scales the stored gradients by ``grad_output``.
Tokens are independent in every loss, so the math is the same as the full path's; only float rounding differs.

Two sizes, because the two costs differ: the ``lm_head`` GEMMs want many tokens per call (at 64 tokens a CPU GEMM
ran at ~60 % of its 256-token speed here), while the loss's autograd graph holds ~15 ``[tokens, V]`` temporaries.
Defaults: 256-token blocks and 16-token loss sub-chunks at V = 128256 (128 MiB and 8 MiB per float32 ``[tokens, V]``
tensor); at N = 2048 that is ~0.9 GiB above the inputs, ``grad_W``'s 0.5 GiB included.

Memory: ``grad_W`` (``[V, H]``, needed anyway), two ``[block, V]`` buffers and the sub-chunk's temporaries. Masked
tokens (``mask == 0``) are skipped, so padding garbage cannot reach values or gradients. ``grad_W`` accumulates in
the weight's dtype, as Liger does. DPKD, a non-linear function of per-sequence means, uses a second autograd
function that returns per-token label log-probs and recomputes each block's logits in its backward pass.

The trainer's entry point is :func:`chunked_loss`, the twin of :func:`distill.losses.compute_loss`.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from distill.losses import IGNORE_INDEX, ReductionMode, check_loss_kwargs, token_weights
from distill.sparse import SparseTarget, upcast

#: Default budget for one block's ``[block, V]`` float32 logits: the unit of the ``lm_head`` matmuls.
DEFAULT_CHUNK_BYTES = 128 * 2**20
#: Default budget for one loss sub-chunk's ``[sub, V]`` float32 tensor; its autograd graph holds ~15 of them.
DEFAULT_LOSS_CHUNK_BYTES = 8 * 2**20


def default_chunk_size(vocab_size: int, budget_bytes: int = DEFAULT_CHUNK_BYTES) -> int:
    """Tokens per chunk so that one ``[chunk, V]`` float32 tensor fits ``budget_bytes`` (a multiple of 8, >= 8)."""
    return max(8, (budget_bytes // (4 * vocab_size)) // 8 * 8)


# (student logits [c, V] with grad, teacher [c, 1, V] or SparseTarget [c, 1] or None, token ids [c]) -> loss [c]
ChunkFn = Callable[[Tensor, "Tensor | SparseTarget | None", Tensor], Tensor]
TeacherFn = Callable[[Tensor], "Tensor | SparseTarget | None"]  # token ids [M] -> teacher for that block


class _FusedLinearLoss(torch.autograd.Function):
    """``sum_i w_i * loss_i(h_i @ W^T)`` over the ``active`` tokens, with gradients computed during the forward.

    Two levels: the ``lm_head`` matmuls run on blocks of ``block`` tokens (large enough for an efficient GEMM); the
    loss and its local autograd graph run on sub-chunks of ``sub`` tokens (small, for few large temporaries). Each
    sub-chunk's logit gradient overwrites its logits in the block buffer, which then feeds the two gradient GEMMs.
    """

    @staticmethod
    def forward(
        ctx,
        hidden: Tensor,
        weight: Tensor,
        chunk_fn: ChunkFn,
        teacher_fn: TeacherFn,
        token_w: Tensor,
        active: Tensor,
        block: int,
        sub: int,
    ):
        grad_h = torch.zeros_like(hidden) if hidden.requires_grad else None
        grad_w = torch.zeros_like(weight) if weight.requires_grad else None
        total = torch.zeros((), dtype=torch.float64, device=hidden.device)
        for start in range(0, active.numel(), block):
            idx = active[start : start + block]
            h = hidden[idx]
            buf = upcast(h @ weight.T)  # student logits, overwritten by their gradient sub-chunk by sub-chunk
            teacher = teacher_fn(idx)
            for a in range(0, idx.numel(), sub):
                b = min(a + sub, idx.numel())
                logits = buf[a:b].detach().requires_grad_()
                with torch.enable_grad():
                    part = teacher[a:b] if teacher is not None else None
                    loss = (chunk_fn(logits, part, idx[a:b]) * token_w[idx[a:b]]).sum()
                    (g,) = torch.autograd.grad(loss, logits, allow_unused=True)
                total += loss.detach().double()
                buf[a:b] = 0.0 if g is None else g
                del logits, part, loss, g
            del teacher  # free the teacher block before the gradient GEMMs
            g = buf.to(hidden.dtype)
            if grad_h is not None:
                grad_h.index_copy_(0, idx, (g @ weight).to(grad_h.dtype))  # bf16 under CPU autocast
            if grad_w is not None:
                grad_w.addmm_(g.T, h)
            del buf, g  # before the next block's logits are allocated
        ctx.save_for_backward(grad_h, grad_w)
        return total.to(torch.float64 if hidden.dtype == torch.float64 else torch.float32)

    @staticmethod
    def backward(ctx, grad_out: Tensor):
        grad_h, grad_w = ctx.saved_tensors
        if not bool(grad_out == 1.0):
            grad_h = None if grad_h is None else grad_h * grad_out.to(grad_h.dtype)
            grad_w = None if grad_w is None else grad_w * grad_out.to(grad_w.dtype)
        return grad_h, grad_w, None, None, None, None, None, None


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
                grad_h.index_copy_(0, idx, (g @ weight).to(grad_h.dtype))  # bf16 under CPU autocast
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
        if logits is not None:
            positions = logits.shape.numel() if isinstance(logits, SparseTarget) else logits.shape[:-1].numel()
            if positions != n:
                raise ValueError(f"teacher_logits must cover the {n} student positions; got {tuple(logits.shape)}")
        self.logits = logits.reshape(n) if isinstance(logits, SparseTarget) else logits
        self.seq = n if logits is None or isinstance(logits, SparseTarget) or logits.dim() != 3 else logits.shape[1]

    @property
    def given(self) -> bool:
        return self.hidden is not None or self.logits is not None

    @torch.no_grad()
    def __call__(self, idx: Tensor) -> Tensor | SparseTarget | None:
        if self.hidden is not None:
            return (self.hidden[idx] @ self.weight.T)[:, None, :]
        if isinstance(self.logits, SparseTarget):
            return self.logits[idx].reshape(-1, 1)
        if self.logits is None:
            return None
        if self.logits.dim() == 2:
            return self.logits[idx][:, None, :]
        return self.logits[idx // self.seq, idx % self.seq][:, None, :]  # no [N, V] copy of a strided view

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
    loss_chunk_size: int | None = None,
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
    ``chunk_size`` (tokens per ``lm_head`` matmul block) and ``loss_chunk_size`` (tokens per loss sub-chunk) default
    to :func:`default_chunk_size` with 128 MiB and 8 MiB budgets (256 and 16 tokens at V = 128256).
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
    vocab = student_weight.shape[0]
    chunk = chunk_size if chunk_size is not None else default_chunk_size(vocab)
    sub = loss_chunk_size if loss_chunk_size is not None else default_chunk_size(vocab, DEFAULT_LOSS_CHUNK_BYTES)
    for key, value in (("chunk_size", chunk), ("loss_chunk_size", sub)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{key} must be a positive int; got {value!r}")
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

    def chunk_fn(logits: Tensor, teacher_part: Tensor | SparseTarget | None, idx: Tensor) -> Tensor:
        args = {key: value[idx] if isinstance(value, Tensor) else value for key, value in kwargs.items()}
        return spec.fn(logits[:, None, :], teacher_part, **args)[:, 0]

    token_w = token_weights(mask, reduction, denominator, upcast(hidden[:0]).dtype).reshape(n).to(hidden.device)
    active = mask.reshape(n).nonzero().squeeze(1).to(hidden.device)
    return _FusedLinearLoss.apply(hidden, student_weight, chunk_fn, teacher, token_w, active, chunk, sub)
