"""Per-token distillation losses: DistiLLM (Ko et al. 2024), DistiLLM-2 (Ko et al. 2025) and their baselines.

Contract shared by every loss in :data:`LOSSES`:

* ``student_logits`` and ``teacher_logits`` have shape ``[B, T, V]`` in any float dtype. They are **already aligned**:
  position ``t`` of both predicts the same target token. The label shift (``logits[:, :-1]`` against
  ``labels[:, 1:]``) is the trainer's job, never the loss's.
* ``p = softmax(teacher)``, ``q = softmax(student)``, both computed in float32 (in float64 for float64 inputs, which
  the tests use). The teacher is a constant: its logits are detached. The result is the per-token loss ``[B, T]``
  in that dtype, unreduced; :func:`reduce_loss` reduces it.
* ``teacher_logits`` may also be a :class:`distill.sparse.SparseTarget` (teacher top-k log-probs plus the tail's
  log-mass, e.g. cached): divergences run on ``top-k + 1 tail bucket`` (error bounds: ``distill/sparse.py``).
* Mixtures are formed in log space in float32 (``logaddexp``), never as ``log(a*p + b*q)``.

``-inf`` logits (masked vocabulary entries, padded ``lm_head`` rows). A vocabulary entry whose log-probability is
``-inf`` in either operand of a KL term contributes exactly 0 to the value and to the gradient. With a mixture
(``0 < alpha < 1``) the second operand is finite wherever the first one is, so skew KLs, the JSD and TV keep their
exact values. Plain FKL/RKL, whose true value is ``+inf`` when the target has mass where the other model has none,
follow DistiLLM's convention instead and sum over the common support only. A position whose logits are all ``-inf``
in either model has no distribution: its loss and gradient are 0. NaN logits are never hidden: they give NaN.

Where we knowingly differ from the reference code:

* ``jongwooko/distillm`` ``forward_kl`` / ``skewed_forward_kl`` return the cross-entropy, dropping the teacher
  entropy ``sum p log p`` (issue #7). Ours are the true KLs: same gradient, different value.
* ``jongwooko/distillm`` forms mixtures in probability space, ``log(a*p + b*q)``; ours use ``logaddexp``.
* ``jongwooko/distillm-2`` does not cast to float32; we always do. Its SRKL detaches the student inside the mixture,
  v1's does not: :func:`skew_reverse_kl` exposes both through ``stop_grad_mixture``.
"""

from __future__ import annotations

import functools
import inspect
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal, NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor

from distill.config import did_you_mean
from distill.sparse import SparseTarget, coarsen, upcast

IGNORE_INDEX = -100
BATCH_INPUTS = ("labels", "is_student_response")  # keyword arguments a loss takes from the batch, not the config
ReductionMode = Literal["token", "sequence", "sum"]
Weight = float | Tensor  # a float, or a per-sequence Tensor[B]


class _LogProbs(NamedTuple):
    logq: Tensor  # student log-probabilities, float32
    logp: Tensor  # teacher log-probabilities, float32, detached
    safe: bool  # some entry is -inf: use the -inf-safe formulas
    empty: Tensor | None  # [B, T] positions where either model has no finite logit


def _log_probs(student_logits: Tensor, teacher_logits: Tensor | SparseTarget) -> _LogProbs:
    """float32 log-softmax of both models, with the ``-inf`` bookkeeping described in the module docstring."""
    if isinstance(teacher_logits, SparseTarget):
        logq, logp, empty = coarsen(student_logits, teacher_logits)
        return _LogProbs(logq, logp, bool(logq.amin() == -math.inf) or bool(logp.amin() == -math.inf), empty)
    if student_logits.shape != teacher_logits.shape or student_logits.dim() != 3:
        raise ValueError(
            f"student and teacher logits must both be [B, T, V]; got {tuple(student_logits.shape)} and "
            f"{tuple(teacher_logits.shape)}"
        )
    s = upcast(student_logits)
    t = upcast(teacher_logits.detach())
    safe = bool(s.amin() == -math.inf) or bool(t.amin() == -math.inf)
    empty = None
    if safe:
        empty = (s.amax(-1) == -math.inf) | (t.amax(-1) == -math.inf)
        if bool(empty.any()):
            s = torch.where(empty[..., None], 0.0, s)
            t = torch.where(empty[..., None], 0.0, t)
        else:
            empty = None
    return _LogProbs(torch.log_softmax(s, -1), torch.log_softmax(t, -1), safe, empty)


def _finish(loss: Tensor, lp: _LogProbs) -> Tensor:
    return loss if lp.empty is None else torch.where(lp.empty, 0.0, loss)


def _kl(log_x: Tensor, log_y: Tensor, safe: bool) -> Tensor:
    """``sum_v x (log x - log y)`` over the last dim; entries where either log is -inf contribute exactly 0."""
    if not safe:
        return (log_x.exp() * (log_x - log_y)).sum(-1)
    ok = (log_x != -math.inf) & (log_y != -math.inf)  # NaN stays "ok", so it propagates
    log_x = torch.where(ok, log_x, 0.0)
    log_y = torch.where(ok, log_y, 0.0)
    return (log_x.exp() * (log_x - log_y)).sum(-1)  # exp(0) * (0 - 0) = 0, with zero gradient, off the support


def _check_weight(name: str, w: Weight, like: Tensor) -> Weight:
    """Validate a mixture weight in [0, 1]: a float, or a detached per-sequence Tensor[B] (float32)."""
    if isinstance(w, Tensor):
        if w.dim() != 1 or w.shape[0] != like.shape[0]:
            raise ValueError(f"{name} as a tensor must have shape [B]={like.shape[0]}; got {tuple(w.shape)}")
        w = w.detach().to(device=like.device, dtype=torch.float64 if like.dtype == torch.float64 else torch.float32)
        if bool(torch.isnan(w).any()) or float(w.min()) < 0.0 or float(w.max()) > 1.0:
            raise ValueError(f"{name} must lie in [0, 1]; got values in [{float(w.min())}, {float(w.max())}]")
        return w
    if isinstance(w, bool) or not isinstance(w, (int, float)) or not 0.0 <= float(w) <= 1.0:
        raise ValueError(f"{name} must be a float in [0, 1] or a Tensor[B]; got {w!r}")
    return float(w)


def _log_mix(logp: Tensor, logq: Tensor, w_p: Weight, safe: bool) -> Tensor:
    """``log(w_p * p + (1 - w_p) * q)`` computed as a ``logaddexp`` of log-probabilities."""
    if isinstance(w_p, float):
        if w_p == 0.0:
            return logq
        if w_p == 1.0:
            return logp
        a, b = logp + math.log(w_p), logq + math.log1p(-w_p)
    else:
        a, b = logp + w_p.log()[:, None, None], logq + torch.log1p(-w_p)[:, None, None]
    if not safe:
        return torch.logaddexp(a, b)
    both = (a == -math.inf) & (b == -math.inf)  # logaddexp's gradient is NaN there; the entry is 0 in any KL
    mix = torch.logaddexp(torch.where(both, 0.0, a), torch.where(both, 0.0, b))
    return torch.where(both, -math.inf, mix)


def forward_kl(student_logits: Tensor, teacher_logits: Tensor | SparseTarget) -> Tensor:
    """Forward KL, ``KL(p || q) = sum_v p (log p - log q)`` (DistiLLM Sec. 2; "KD" of Hinton et al.).

    The true KL, teacher entropy included. DistiLLM's ``forward_kl`` returns ``-sum p log q`` (issue #7): same
    gradient, value offset by the teacher entropy.
    """
    lp = _log_probs(student_logits, teacher_logits)
    return _finish(_kl(lp.logp, lp.logq, lp.safe), lp)


def reverse_kl(student_logits: Tensor, teacher_logits: Tensor | SparseTarget) -> Tensor:
    """Reverse KL, ``KL(q || p) = sum_v q (log q - log p)`` (DistiLLM Sec. 2; MiniLLM's token-level objective)."""
    lp = _log_probs(student_logits, teacher_logits)
    return _finish(_kl(lp.logq, lp.logp, lp.safe), lp)


def skew_forward_kl(student_logits: Tensor, teacher_logits: Tensor | SparseTarget, alpha: Weight = 0.1) -> Tensor:
    """Skew KL, ``SKL^a = KL(p || a p + (1 - a) q)`` (DistiLLM Eq. 4; DistiLLM-2 Eq. 2). ``alpha`` = teacher share.

    alpha = 0 is :func:`forward_kl`, alpha = 1 is 0. The gradient is ``-(1-a) sum_v r(v) grad q(v)`` with
    ``r = p / (a p + (1-a) q) <= 1/a``: bounded, unlike FKL's ``p / q``. The student is not detached inside the
    mixture (as in both reference repos). DistiLLM's ``skewed_forward_kl`` drops the teacher entropy; ours does not.
    ``alpha`` may be a per-sequence Tensor[B] (DistiLLM-2's curriculum); it is detached.
    """
    alpha = _check_weight("alpha", alpha, student_logits)
    lp = _log_probs(student_logits, teacher_logits)
    return _finish(_kl(lp.logp, _log_mix(lp.logp, lp.logq, alpha, lp.safe), lp.safe), lp)


def skew_reverse_kl(
    student_logits: Tensor,
    teacher_logits: Tensor | SparseTarget,
    alpha: Weight = 0.1,
    stop_grad_mixture: bool = False,
) -> Tensor:
    """Skew reverse KL, ``SRKL^a = KL(q || (1 - a) p + a q)`` (DistiLLM Eq. 5; DistiLLM-2 Eq. 2).

    ``alpha`` is the student share of the mixture.

    alpha = 0 is :func:`reverse_kl`, alpha = 1 is 0. ``stop_grad_mixture=True`` detaches the student inside the
    mixture, as ``jongwooko/distillm-2`` does (``log m = logsumexp(log(1-a) + log p, log a + log q.detach())``);
    DistiLLM v1 does not (the default). The value is the same either way, only the gradient changes.
    """
    alpha = _check_weight("alpha", alpha, student_logits)
    if not isinstance(stop_grad_mixture, bool):
        raise ValueError(f"stop_grad_mixture must be a bool; got {stop_grad_mixture!r}")
    lp = _log_probs(student_logits, teacher_logits)
    logq_mix = lp.logq.detach() if stop_grad_mixture else lp.logq
    w_p = 1.0 - alpha
    return _finish(_kl(lp.logq, _log_mix(lp.logp, logq_mix, w_p, lp.safe), lp.safe), lp)


def generalized_jsd(student_logits: Tensor, teacher_logits: Tensor | SparseTarget, beta: float = 0.5) -> Tensor:
    """Generalized JSD, ``b KL(p || m) + (1 - b) KL(q || m)`` with ``m = b p + (1 - b) q`` (GKD, Agarwal et al. 2024,
    Eq. 3; TRL's ``GKDTrainer.generalized_jsd_loss``).

    Equals ``b SKL^b + (1 - b) SRKL^(1-b)`` (DistiLLM Sec. 3). Like GKD and TRL, the endpoints are the normalised
    limits: beta = 0 is :func:`forward_kl` and beta = 1 is :func:`reverse_kl` (the literal formula would be 0).
    DistiLLM v1's ``js_distance(lam=0.9)`` is ``beta = 0.1``; DistiLLM-2's ``gkd`` baseline is ``beta = 0.9``.
    """
    beta = _check_weight("beta", beta, student_logits)
    if not isinstance(beta, float):
        raise ValueError("beta of generalized_jsd must be a float")
    if beta == 0.0:
        return forward_kl(student_logits, teacher_logits)
    if beta == 1.0:
        return reverse_kl(student_logits, teacher_logits)
    lp = _log_probs(student_logits, teacher_logits)
    log_m = _log_mix(lp.logp, lp.logq, beta, lp.safe)
    loss = beta * _kl(lp.logp, log_m, lp.safe) + (1.0 - beta) * _kl(lp.logq, log_m, lp.safe)
    return _finish(loss, lp)


def total_variation(student_logits: Tensor, teacher_logits: Tensor | SparseTarget) -> Tensor:
    """Total variation distance, ``1/2 sum_v |p - q|`` (Wen et al. 2023; DistiLLM's ``tv_distance``)."""
    lp = _log_probs(student_logits, teacher_logits)
    return _finish(0.5 * (lp.logp.exp() - lp.logq.exp()).abs().sum(-1), lp)


def label_logprobs(logits: Tensor, labels: Tensor) -> Tensor:
    """``log softmax(logits)[label]`` per position in float32, 0 where ``labels == IGNORE_INDEX``: the one token
    log-likelihood of the project (the NLL loss, DPKD, the trainer's validation loss, the eval's fidelity NLL)."""
    if logits.dim() != 3 or labels.shape != logits.shape[:2]:
        raise ValueError(f"labels must be [B, T] matching logits [B, T, V]; got {tuple(labels.shape)}")
    keep = labels != IGNORE_INDEX
    x = upcast(logits)
    if bool(x.amin() == -math.inf):  # rows with no finite logit (padding garbage) must not NaN the gradient
        x = torch.where((x.amax(-1) == -math.inf)[..., None], 0.0, x)
    target = torch.where(keep, labels, 0)
    picked = x.gather(-1, target[..., None]).squeeze(-1) - torch.logsumexp(x, -1)
    return torch.where(keep, picked, 0.0)


def nll(student_logits: Tensor, teacher_logits: Tensor | None = None, *, labels: Tensor) -> Tensor:
    """Token NLL ``-log q(y_t)`` of the target ids: SFT on ground truth, or SeqKD (Kim & Rush 2016) on teacher outputs.

    ``labels`` is ``[B, T]``, aligned with the logits, ``-100`` where not trained (those positions give 0).
    ``teacher_logits`` is accepted and ignored so that every loss shares one call shape. DistiLLM's code trains
    SeqKD with FKL on teacher outputs; DistiLLM-2's ``seqkd`` is this NLL.
    """
    return -label_logprobs(student_logits, labels)


def _split_roles(is_student_response: Tensor, batch: int) -> tuple[Tensor, Tensor]:
    if is_student_response.dtype != torch.bool or is_student_response.shape != (batch,):
        raise ValueError(
            f"is_student_response must be a bool Tensor[B]={batch}; got {is_student_response.dtype} "
            f"{tuple(is_student_response.shape)}"
        )
    return (~is_student_response).nonzero().squeeze(1), is_student_response.nonzero().squeeze(1)


def _rows(w: Weight, idx: Tensor) -> Weight:
    return w[idx] if isinstance(w, Tensor) else w


def distillm2_contrastive(
    student_logits: Tensor,
    teacher_logits: Tensor | SparseTarget,
    *,
    is_student_response: Tensor,
    alpha_teacher: Weight = 0.1,
    alpha_student: Weight = 0.1,
    beta: float = 0.5,
) -> Tensor:
    """DistiLLM-2's contrastive objective (Ko et al. 2025, Eq. 2; CALD, Eq. 5 at beta = 1/2).

    Teacher-response rows (``is_student_response`` False) carry ``2 (1 - b) SKL^{alpha_teacher}`` (pull-up);
    student-response rows carry ``2 b SRKL^{alpha_student}`` with the student detached inside the mixture (push-down,
    as in ``jongwooko/distillm-2``). The factor 2 makes the ``"sequence"`` reduction over the ``2|D|`` rows of a
    paired batch equal ``mean over pairs of (1 - b) SKL(y_t) + b SRKL(y_s)``; at ``b = 1/2`` that is CALD (Eq. 5),
    the mean of per-sequence SKL(y_t) and SRKL(y_s). Paper Eq. 2 as printed is half of this; the released code
    (``(2 - b') SKL + b' SRKL`` per pair, ``b' = 2b``) is twice it. Alphas may be per-sequence Tensor[B] (the
    curriculum); they are detached. The beta schedule is the trainer's: pass the current value.
    """
    batch = student_logits.shape[0]
    idx_t, idx_s = _split_roles(is_student_response, batch)
    alpha_teacher = _check_weight("alpha_teacher", alpha_teacher, student_logits)
    alpha_student = _check_weight("alpha_student", alpha_student, student_logits)
    beta = _check_weight("beta", beta, student_logits)
    if not isinstance(beta, float):
        raise ValueError("beta of distillm2_contrastive must be a float")
    out = upcast(student_logits.new_zeros(student_logits.shape[:2]))
    if idx_t.numel():
        skl = skew_forward_kl(student_logits[idx_t], teacher_logits[idx_t], alpha=_rows(alpha_teacher, idx_t))
        out = out.index_put((idx_t,), 2.0 * (1.0 - beta) * skl)
    if idx_s.numel():
        srkl = skew_reverse_kl(
            student_logits[idx_s], teacher_logits[idx_s], alpha=_rows(alpha_student, idx_s), stop_grad_mixture=True
        )
        out = out.index_put((idx_s,), 2.0 * beta * srkl)
    return out


def sequence_logps(logits: Tensor, labels: Tensor) -> Tensor:
    """Mean token log-probability of ``labels`` per sequence, ``[B]`` float32 (DPO's ``average_log_prob=True``).

    A sequence without trained tokens gets 0.
    """
    per_token = label_logprobs(logits, labels)
    count = (labels != IGNORE_INDEX).sum(-1).clamp_min(1)
    return per_token.sum(-1) / count


def dpkd_from_logps(
    student_logps: Tensor, teacher_logps: Tensor, is_student_response: Tensor, beta: float = 0.1
) -> Tensor:
    """DPKD per pair from per-sequence mean log-probs; see :func:`dpkd`. The k-th teacher-response row pairs with
    the k-th student-response row, in batch order."""
    idx_t, idx_s = _split_roles(is_student_response, student_logps.shape[0])
    if idx_t.numel() != idx_s.numel():
        raise ValueError(
            f"dpkd needs as many teacher-response as student-response rows; got {idx_t.numel()} and {idx_s.numel()}"
        )
    if isinstance(beta, bool) or not isinstance(beta, (int, float)) or not beta > 0:
        raise ValueError(f"beta of dpkd must be a float > 0; got {beta!r}")
    teacher_logps = teacher_logps.detach()
    margin = (student_logps[idx_t] - student_logps[idx_s]) - (teacher_logps[idx_t] - teacher_logps[idx_s])
    return F.softplus(-float(beta) * margin)  # = -log sigmoid(beta * margin)


def dpkd(
    student_logits: Tensor,
    teacher_logits: Tensor,
    *,
    labels: Tensor,
    is_student_response: Tensor,
    beta: float = 0.1,
) -> Tensor:
    """DPKD (Li et al. 2024b; DistiLLM-2 App. D.1, ``loss_type: dpkd``): DPO with the teacher as reference model.

    ``-log sigmoid(b [(log q(y_t) - log q(y_s)) - (log p(y_t) - log p(y_s))])`` per pair, with token-averaged
    sequence log-probs of ``labels`` (``-100`` = not trained). Teacher responses are "chosen", student responses
    "rejected", as in the DPO paper's sign convention. Returns ``[P]``, one value per pair: a sequence-level loss,
    reduced by a mean over pairs (see :func:`compute_loss`). Not available with a sparse teacher, which lacks the
    teacher's log-probability of arbitrary label ids.
    """
    if isinstance(teacher_logits, SparseTarget):
        raise ValueError("dpkd needs full teacher logits; a SparseTarget lacks log p of arbitrary label ids")
    return dpkd_from_logps(
        sequence_logps(student_logits, labels), sequence_logps(teacher_logits, labels), is_student_response, beta
    )


def token_weights(
    mask: Tensor, mode: ReductionMode = "token", denominator: float | None = None, dtype: torch.dtype = torch.float32
) -> Tensor:
    """Per-token weights ``w`` such that the reduced loss is ``sum(w * per_token)``; ``[B, T]``, 0 off-mask.

    * ``"token"``: a global token mean, ``sum(mask * l) / sum(mask)`` (DistiLLM v1).
    * ``"sequence"``: the mean over each sequence's tokens, then the mean over sequences that have any (DistiLLM-2).
    * ``"sum"``: the masked sum.

    ``denominator`` replaces the token count (``"token"``) or the sequence count (``"sequence"``), e.g. with the
    count over the whole optimizer step for gradient accumulation. An empty mask gives weights 0 (loss 0).
    """
    if mask.dim() != 2:
        raise ValueError(f"mask must be [B, T]; got {tuple(mask.shape)}")
    m = mask.to(dtype)
    if mode == "sum":
        return m
    if denominator is not None and not denominator > 0:
        raise ValueError(f"denominator must be > 0; got {denominator!r}")
    if mode == "token":
        return m / (denominator if denominator is not None else m.sum().clamp_min(1.0))
    if mode == "sequence":
        count = m.sum(-1, keepdim=True)
        n_seq = denominator if denominator is not None else (count > 0).sum().clamp_min(1)
        return m / count.clamp_min(1.0) / n_seq
    raise ValueError(f"reduction mode must be 'token', 'sequence' or 'sum'; got {mode!r}")


def reduce_loss(
    per_token: Tensor, mask: Tensor, mode: ReductionMode = "token", denominator: float | None = None
) -> Tensor:
    """Reduce a ``[B, T]`` per-token loss to a scalar with :func:`token_weights`. Masked positions are excluded by
    value (``where``), so a NaN or inf there never reaches the result."""
    if per_token.shape != mask.shape:
        raise ValueError(f"per_token {tuple(per_token.shape)} and mask {tuple(mask.shape)} must have the same shape")
    per_token = upcast(per_token)
    w = token_weights(mask, mode, denominator, per_token.dtype).to(per_token.device)
    return (torch.where(mask.bool(), per_token, 0.0) * w).sum()


@dataclass(frozen=True)
class LossSpec:
    """A registered loss: its function plus what the trainer must feed it (read off the signature)."""

    fn: Callable[..., Tensor]
    #: the valid range of numeric hyperparameters, ``name -> (low, high, low_exclusive)`` (None: unbounded)
    ranges: dict[str, tuple[float | None, float | None, bool]] = field(default_factory=dict)
    #: For pairwise losses (one value per teacher-response/student-response pair instead of [B, T]): the same loss
    #: from per-sequence mean label log-probs ``(student [B], teacher [B], is_student_response, **hparams)``.
    from_sequence_logps: Callable[..., Tensor] | None = None

    def __call__(self, *args, **kwargs) -> Tensor:
        return self.fn(*args, **kwargs)

    @property
    def pairwise(self) -> bool:
        return self.from_sequence_logps is not None

    @property
    def _params(self) -> list[inspect.Parameter]:
        return list(inspect.signature(self.fn).parameters.values())[2:]

    @property
    def batch_inputs(self) -> tuple[str, ...]:
        """Batch tensors passed by keyword: a subset of :data:`BATCH_INPUTS`."""
        return tuple(p.name for p in self._params if p.name in BATCH_INPUTS)

    @property
    def hparams(self) -> dict[str, object]:
        """Config-settable keyword arguments and their defaults."""
        return {p.name: p.default for p in self._params if p.name not in BATCH_INPUTS}

    @property
    def needs_teacher(self) -> bool:
        return inspect.signature(self.fn).parameters["teacher_logits"].default is inspect.Parameter.empty


def check_loss_kwargs(name: str, kwargs: dict[str, object]) -> LossSpec:
    """Return the spec of loss ``name``; raise a one-line ValueError on an unknown name or keyword argument, a value
    of the wrong type, or one outside the range its registry entry gives (``LossSpec.ranges``)."""
    if name not in LOSSES:
        raise ValueError(f"unknown loss {name!r}{did_you_mean(name, LOSSES)}; known: {', '.join(sorted(LOSSES))}")
    spec = LOSSES[name]
    for key, value in kwargs.items():
        if key not in spec.hparams:
            allowed = ", ".join(spec.hparams) or "none"
            raise ValueError(f"loss {name!r} got unknown keyword argument {key!r}; allowed: {allowed}")
        default = spec.hparams[key]
        if not isinstance(default, (int, float)) or isinstance(value, Tensor):  # per-sample values: the trainer's
            continue
        if isinstance(default, bool) != isinstance(value, bool) or not isinstance(value, (int, float)):
            want = "true or false" if isinstance(default, bool) else "a number"
            raise ValueError(f"loss {name!r}: {key} must be {want}, got {value!r}")
        low, high, open_low = spec.ranges.get(key, (None, None, False))
        if (
            value != value
            or (low is not None and (value <= low if open_low else value < low))
            or (high is not None and value > high)
        ):  # value != value: NaN
            where = f"{'>' if open_low else '>='} {low:g}" if high is None else f"in [{low:g}, {high:g}]"
            raise ValueError(f"loss {name!r}: {key}={value!r} is out of range (must be {where})")
    return spec


def get_loss(name: str, **kwargs) -> Callable[..., Tensor]:
    """The loss function ``name`` with its config hyperparameters bound (checked by :func:`check_loss_kwargs`)."""
    return functools.partial(check_loss_kwargs(name, kwargs).fn, **kwargs)


def compute_loss(
    name: str,
    student_logits: Tensor,
    teacher_logits: Tensor | SparseTarget | None,
    *,
    mask: Tensor,
    reduction: ReductionMode = "token",
    denominator: float | None = None,
    labels: Tensor | None = None,
    is_student_response: Tensor | None = None,
    **hparams,
) -> Tensor:
    """The trainer's single call on the full-logits path: run loss ``name`` and reduce it to a scalar.

    ``mask`` ``[B, T]`` marks trained positions. Rows of logits at masked positions that are not finite (NaN, inf,
    all ``-inf``: padding garbage) are zeroed first, so they inject no NaN into values or gradients. Pairwise losses
    (DPKD) are averaged over pairs, or summed and divided by ``denominator`` (the pair count of the step); ``mask``
    then only restricts ``labels``. :func:`distill.chunked.chunked_loss` is the memory-efficient twin.
    """
    spec = check_loss_kwargs(name, hparams)
    if mask.shape != student_logits.shape[:2]:
        raise ValueError(f"mask {tuple(mask.shape)} must be [B, T] of logits {tuple(student_logits.shape)}")
    mask = mask.bool()
    student_logits = _clean_masked_rows(student_logits, mask)
    if isinstance(teacher_logits, Tensor):
        teacher_logits = _clean_masked_rows(teacher_logits, mask)
    elif teacher_logits is None and spec.needs_teacher:
        raise ValueError(f"loss {name!r} needs teacher logits")
    batch = {"labels": labels, "is_student_response": is_student_response}
    for key in spec.batch_inputs:
        if batch[key] is None:
            raise ValueError(f"loss {name!r} needs the batch input {key!r}")
    if labels is not None:
        batch["labels"] = torch.where(mask, labels, IGNORE_INDEX)
    out = spec.fn(student_logits, teacher_logits, **{k: batch[k] for k in spec.batch_inputs}, **hparams)
    if spec.pairwise:
        return out.sum() / denominator if denominator is not None else out.mean()
    return reduce_loss(out, mask, reduction, denominator)


def _clean_masked_rows(logits: Tensor, mask: Tensor) -> Tensor:
    bad = ~torch.isfinite(logits.detach().amax(-1)) & ~mask
    return logits.masked_fill(bad[..., None], 0.0) if bool(bad.any()) else logits


UNIT = (0.0, 1.0, False)  # the registry's ranges: skew mixtures and JSD's interpolation are weights, DPKD's β divides
LOSSES: dict[str, LossSpec] = {
    "forward_kl": LossSpec(forward_kl),
    "reverse_kl": LossSpec(reverse_kl),
    "skew_forward_kl": LossSpec(skew_forward_kl, ranges={"alpha": UNIT}),
    "skew_reverse_kl": LossSpec(skew_reverse_kl, ranges={"alpha": UNIT}),
    "generalized_jsd": LossSpec(generalized_jsd, ranges={"beta": UNIT}),
    "total_variation": LossSpec(total_variation),
    "nll": LossSpec(nll),
    "distillm2_contrastive": LossSpec(
        distillm2_contrastive, ranges={"alpha_teacher": UNIT, "alpha_student": UNIT, "beta": (0.0, None, False)}
    ),
    "dpkd": LossSpec(dpkd, from_sequence_logps=dpkd_from_logps, ranges={"beta": (0.0, None, True)}),
}
