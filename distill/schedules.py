"""DistiLLM-2's β schedule and per-sample α curriculum (Ko et al. 2025, §3.3, Algorithm 1; methods.md §3.2).

β weights the two terms of the contrastive loss, ``(1 − β)·SKL(y_t) + β·SRKL(y_s)``:

* ``constant``: β0 throughout (the released code's default, ``gradual_beta=False``).
* ``linear``: β0 → ``beta_max`` linearly over the first half of training, then held. With β0 = 0.5 and
  ``beta_max`` = 0.75 this is the released code's ``gradual_beta`` (``b = 1 + 0.5·min(1, 2·step/max_steps)``, β = b/2).
* ``paper``: Algorithm 1 line 13 as printed, ``clip(e/E + τ/T, β0, 1)`` with e the 0-based epoch, E the number of
  epochs, τ the step in the epoch and T the steps per epoch. Taken literally it reaches 1 (SKL weight 0) by the end
  of the first epoch when E > 1; methods.md §3.2 calls the intended form ambiguous. Recorded, not recommended.

α curriculum: for each sample, ``α = clip(1 − (1 − α0)·m / gap, lo, hi)``, keeping ``(1 − α)·gap`` near the reference
``(1 − α0)·m``. For teacher responses ``gap = p̄(y_t) − q̄(y_t)``, for student responses ``gap = q̄(y_s) − p̄(y_s)``, with
``p̄, q̄`` the geometric-mean token probabilities of the sequence (the released code's choice; Algorithm 1 prints
crossed indices, see methods.md §7.3). ``m`` is the mean gap of each response type over the first epoch, during which
the curriculum is off (Table 11). A non-positive gap is the easiest case and gets ``lo``. α is computed from detached
values, so it is a constant per sample. Unlike the released code, whose α path silently falls back to 0.1 (a
misplaced metrics key caught by a bare ``except``), this curriculum is really active when enabled.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

import torch

from distill.config import require
from distill.methods import METHODS

if TYPE_CHECKING:
    from distill.data import Example
    from distill.train_config import OptimConfig, TrainConfig

BetaSchedule = Literal["constant", "linear", "paper"]


@dataclass
class DistiLLM2Config:
    """DistiLLM-2 schedule knobs (paper Table 11 defaults)."""

    beta_schedule: BetaSchedule = field(default="linear", metadata={"help": "constant | linear (code) | paper"})
    beta0: float = field(default=0.5, metadata={"min": 0.0, "max": 1.0})
    beta_max: float = field(
        default=0.75, metadata={"help": "end value of the linear schedule", "min": 0.0, "max": 1.0}
    )
    alpha0: float = field(default=0.1, metadata={"help": "base skew α (both terms)", "min": 0.0, "max": 1.0})
    alpha_curriculum: bool = field(default=True, metadata={"help": "per-sample α from epoch 2 on"})
    alpha_min: float = field(default=0.01, metadata={"min": 0.0, "max": 1.0})
    alpha_max: float = field(default=0.1, metadata={"min": 0.0, "max": 1.0})

    def __post_init__(self) -> None:
        require(self.alpha_min <= self.alpha_max, f"alpha_min {self.alpha_min} > alpha_max {self.alpha_max}")


def beta_at(
    cfg: DistiLLM2Config, step: int, total_steps: int, steps_per_epoch: int, epochs: int, progress: float | None = None
) -> float:
    """β at ``step``; ``progress`` (fraction of training done) defaults to ``step / total_steps``."""
    if progress is None:
        progress = step / max(1, total_steps)
    if cfg.beta_schedule == "constant":
        return cfg.beta0
    if cfg.beta_schedule == "linear":
        return cfg.beta0 + (cfg.beta_max - cfg.beta0) * min(1.0, 2.0 * progress)
    if cfg.beta_schedule == "paper":
        e, tau = divmod(step, max(1, steps_per_epoch))
        return min(1.0, max(cfg.beta0, e / max(1, epochs) + tau / max(1, steps_per_epoch)))
    raise ValueError(f"unknown beta schedule {cfg.beta_schedule!r}; allowed: constant, linear, paper")


class AlphaCurriculum:
    """Per-sample α for the two terms. Accumulates the reference gaps in epoch 1, applies them afterwards."""

    def __init__(self, cfg: DistiLLM2Config):
        self.cfg = cfg
        self.sums = {"teacher": 0.0, "student": 0.0}
        self.counts = {"teacher": 0, "student": 0}

    def reference(self, role: str) -> float | None:
        return self.sums[role] / self.counts[role] if self.counts[role] else None

    def alphas(
        self, epoch: int, seq_logp: torch.Tensor, seq_logq: torch.Tensor, is_student: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, bool]:
        """``(alpha_teacher [B], alpha_student [B], active)`` for a batch; updates the epoch-1 reference."""
        p_bar, q_bar = seq_logp.detach().float().exp(), seq_logq.detach().float().exp()
        gap = torch.where(is_student, q_bar - p_bar, p_bar - q_bar)
        base = torch.full_like(gap, self.cfg.alpha0)
        if not self.cfg.alpha_curriculum or epoch == 0:
            if self.cfg.alpha_curriculum:
                for role, sel in (("teacher", ~is_student), ("student", is_student)):
                    self.sums[role] += float(gap[sel].sum())
                    self.counts[role] += int(sel.sum())
            return base, base, False
        ref = torch.tensor(
            [self.reference("student" if s else "teacher") or 0.0 for s in is_student.tolist()],
            dtype=gap.dtype,
            device=gap.device,  # it once had none: a GPU run failed at the first step of epoch 2
        )
        raw = 1.0 - (1.0 - self.cfg.alpha0) * ref / gap.clamp_min(1e-12)
        alpha = torch.where(gap > 0, raw, torch.full_like(gap, self.cfg.alpha_min))
        alpha = alpha.clamp(self.cfg.alpha_min, self.cfg.alpha_max)
        return alpha, alpha, True

    def state_dict(self) -> dict[str, Any]:
        return {"sums": dict(self.sums), "counts": dict(self.counts)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.sums, self.counts = dict(state["sums"]), dict(state["counts"])


def lr_lambda(cfg: OptimConfig, total: int, budget_progress=None):
    """LR multiplier at ``step``: linear warmup, then constant / cosine / linear decay over the run.

    Under a token budget (``budget_progress`` returns the fraction of ``max_tokens`` trained so far) the decay
    follows that fraction, so the schedule ends where the budget does; by steps, it would decay over
    ``epochs x steps per epoch``, which a budget may never reach."""

    def fn(step: int) -> float:
        if step < cfg.warmup_steps:
            return (step + 1) / (cfg.warmup_steps + 1)
        if cfg.schedule == "constant":
            return 1.0
        frac = min(1.0, (step - cfg.warmup_steps) / max(1, total - cfg.warmup_steps))
        if budget_progress is not None:
            frac = min(1.0, budget_progress())
        shape = 0.5 * (1 + math.cos(math.pi * frac)) if cfg.schedule == "cosine" else 1.0 - frac
        return cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * shape

    return fn


def expected_steps(cfg: TrainConfig, total: int, train_ex: list[Example], tok, world: int) -> int:
    """The progress bar's first guess of the step count: under a token budget, from the mean response length of
    the data (pairs count twice); the bar re-estimates it from the real token counts after every step."""
    if not cfg.optim.max_tokens:
        return total
    lengths = [len(tok(e.response, add_special_tokens=False)["input_ids"]) + 1 for e in train_ex if e.response]
    if not lengths:
        return total
    rows = cfg.optim.batch_size * cfg.optim.grad_accum * world * (2 if METHODS[cfg.method].sampler == "batched" else 1)
    per_step = rows * sum(lengths) / len(lengths)
    return min(total, max(1, math.ceil(cfg.optim.max_tokens / per_step)))
