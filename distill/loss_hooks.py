"""Loss hooks: what a loss needs per step beyond its fixed hyperparameters, registered with the loss.

The trainer never names a loss. Each step it asks the loss's hook (:data:`LOSS_HOOKS`, the default :class:`LossHook`
does nothing) for the step's values, and for each micro-batch it lets the hook set the loss's keyword arguments from
the batch and split the batch into logged terms. The hook's state is checkpointed with the sampler's.

DistiLLM-2's contrastive loss is the one that uses it (:class:`DistiLLM2Hook`): β follows its schedule over training
(``beta_at``), and α is per sample from epoch 2 on, from the detached per-sequence probabilities of the batch
(``AlphaCurriculum``); the loss is logged as its two terms, SKL on teacher responses and SRKL on student responses.
"""

from __future__ import annotations

from typing import Any

import torch

from distill.schedules import AlphaCurriculum, beta_at


class LossHook:
    """The default: no per-step values, the loss's configured keyword arguments, one logged term."""

    #: whether :meth:`batch` reads the per-sequence log-probabilities (then the teacher runs in full: no top-k cache)
    uses_sequence_logps = False

    def __init__(self, cfg) -> None:
        self.cfg = cfg

    def defaults(self) -> dict[str, Any]:
        """Keyword arguments of the loss that the config may leave unset."""
        return {}

    def step_info(self, step: int, total: int, steps_per_epoch: int, epochs: int, progress: float) -> dict[str, Any]:
        """Values for the whole optimizer step (also written to the step's metrics row)."""
        return {}

    def batch(self, kwargs: dict[str, Any], info: dict[str, Any], s_lp, t_lp, is_student) -> dict[str, Any]:
        """Set the loss's keyword arguments for one micro-batch (in ``kwargs``); returns what to log."""
        return {}

    def groups(self, is_student: torch.Tensor) -> dict[str, torch.Tensor]:
        """The rows of each logged term of the loss."""
        return {"loss": torch.arange(len(is_student), device=is_student.device)}

    def state_dict(self) -> dict[str, Any] | None:
        return None

    def load_state_dict(self, state: dict[str, Any] | None) -> None:
        del state


class DistiLLM2Hook(LossHook):
    """DistiLLM-2: β from its schedule, per-sample α from the curriculum, the SKL / SRKL terms logged apart."""

    uses_sequence_logps = True

    def __init__(self, cfg) -> None:
        super().__init__(cfg)
        self.curriculum = AlphaCurriculum(cfg.distillm2)

    def defaults(self) -> dict[str, Any]:
        return {"alpha_teacher": self.cfg.distillm2.alpha0, "alpha_student": self.cfg.distillm2.alpha0}

    def step_info(self, step: int, total: int, steps_per_epoch: int, epochs: int, progress: float) -> dict[str, Any]:
        return {"beta": beta_at(self.cfg.distillm2, step, total, steps_per_epoch, epochs, progress)}

    def batch(self, kwargs: dict[str, Any], info: dict[str, Any], s_lp, t_lp, is_student) -> dict[str, Any]:
        kwargs["beta"] = info["beta"]
        a_t, a_s, active = self.curriculum.alphas(info["epoch"], t_lp, s_lp, is_student)
        if active:
            kwargs["alpha_teacher"], kwargs["alpha_student"] = a_t, a_s
        logs: dict[str, Any] = {"alpha": [round(float(a), 5) for a in a_t], "alpha_active": active}
        if (~is_student).any():
            logs["logq_teacher_resp"] = float(s_lp[~is_student].mean())
        if is_student.any():
            logs["logq_student_resp"] = float(s_lp[is_student].mean())
        return logs

    def groups(self, is_student: torch.Tensor) -> dict[str, torch.Tensor]:
        return {
            "skl_teacher_resp": (~is_student).nonzero().squeeze(1),
            "srkl_student_resp": is_student.nonzero().squeeze(1),
        }

    def state_dict(self) -> dict[str, Any] | None:
        return self.curriculum.state_dict()

    def load_state_dict(self, state: dict[str, Any] | None) -> None:
        if state is not None:
            self.curriculum.load_state_dict(state)


#: loss name -> its hook (a loss without one gets :class:`LossHook`)
LOSS_HOOKS: dict[str, type[LossHook]] = {"distillm2_contrastive": DistiLLM2Hook}


def loss_hook(name: str, cfg) -> LossHook:
    return LOSS_HOOKS.get(name, LossHook)(cfg)
