"""The loss of one micro-batch: the student (and frozen teacher) forward and the method's registered loss,
normalised by the optimizer step's counts (target tokens, sequences or pairs), on the full-logits or the chunked
path. What a loss needs per step (DistiLLM-2's β schedule and per-sample α) comes from its hook
(``distill/loss_hooks.py``); nothing here names a loss."""

from __future__ import annotations

from typing import Any

import torch

from distill.chunked import chunked_loss
from distill.data import Row, collate, model_inputs, shift_targets
from distill.loss_hooks import loss_hook
from distill.losses import LOSSES, compute_loss, nll, sequence_logps
from distill.methods import METHODS
from distill.train_config import TrainConfig


class LossComputer:
    """Student/teacher forward and the configured loss for one micro-batch, normalised by the step's counts."""

    def __init__(self, cfg: TrainConfig, student, teacher, vocab: int, cache=None):
        method = METHODS[cfg.method]
        self.cache = cache
        self.name = cfg.loss or method.loss
        self.kwargs = {**(method.loss_kwargs if cfg.loss is None else {}), **cfg.loss_kwargs}
        self.spec = LOSSES[self.name]
        self.reduction = cfg.reduction or method.reduction
        self.cfg, self.student, self.teacher, self.vocab = cfg, student, teacher, vocab
        self.hook = loss_hook(self.name, cfg)
        self.kwargs = {**self.hook.defaults(), **self.kwargs}

    def denominator(self, batches: list[dict[str, torch.Tensor]]) -> float:
        """This rank's share of the step's normaliser: target tokens, sequences with targets, or pairs."""
        masks = [shift_targets(b["labels"])[1] for b in batches]
        if self.spec.pairwise:
            return float(sum(int((~b["is_student_response"]).sum()) for b in batches))
        if self.reduction == "sequence":
            return float(sum(int(m.any(-1).sum()) for m in masks))
        return float(sum(int(m.sum()) for m in masks))

    def _forward(self, model, batch, grad: bool) -> tuple[torch.Tensor, torch.Tensor | None]:
        """``(logits [B, T-1, V'], None)`` or, on the chunked path, ``(final hidden [B, T-1, H], head [V', H])``."""
        args = {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"], "use_cache": False}
        if "pixel_values" in batch:  # image rows: teacher and student see the same pixels
            args["pixel_values"] = batch["pixel_values"]
        with torch.set_grad_enabled(grad):
            if not self.cfg.chunked_loss:
                return model(**args).logits[:, :-1, : self.vocab], None
            # logits_to_keep=1: the full [B, T, V] logits are never formed; the last hidden state is post-norm
            out = model(**args, output_hidden_states=True, logits_to_keep=1)
            head = unwrap(model).get_output_embeddings().weight[: self.vocab]
            return out.hidden_states[-1][:, :-1], head

    def _seq_logps(self, out: torch.Tensor, head: torch.Tensor | None, labels: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            if head is None:
                return sequence_logps(out.detach(), labels)
            rows = [
                sequence_logps((out[i : i + 1].detach() @ head.detach().T).float(), labels[i : i + 1])
                for i in range(len(out))
            ]
            return torch.cat(rows)

    def __call__(
        self, batch, denominator: float, step_info: dict[str, Any], rows: list[Row] | None = None
    ) -> tuple[torch.Tensor, dict[str, Any]]:
        labels, mask = shift_targets(batch["labels"])
        is_student = batch["is_student_response"]
        s_out, s_head = self._forward(self.student, batch, grad=True)
        t_out, t_head = None, None
        if self.spec.needs_teacher:
            cacheable = self.cache is not None and rows is not None and not self.spec.pairwise
            if cacheable and not self.hook.uses_sequence_logps and not any(r.is_student for r in rows):
                t_out = self.cache.target(rows, labels.shape[1]).to(labels.device)
            else:
                t_out, t_head = self._forward(self.teacher, batch, grad=False)
        kwargs = dict(self.kwargs)
        s_lp = t_lp = None
        if self.hook.uses_sequence_logps:
            s_lp, t_lp = self._seq_logps(s_out, s_head, labels), self._seq_logps(t_out, t_head, labels)
        logs = self.hook.batch(kwargs, step_info, s_lp, t_lp, is_student)
        # a loss that depends on the row's role gets one term per role (DistiLLM-2: SKL on y_t, SRKL on y_s)
        total, terms = None, {}
        for term, idx in self.hook.groups(is_student).items():
            if idx.numel() == 0:
                continue
            sub = {k: _rows(v, idx, len(is_student)) for k, v in kwargs.items()}
            value = self._loss(
                s_out[idx],
                s_head,
                None if t_out is None else t_out[idx],
                t_head,
                mask[idx],
                labels[idx],
                is_student[idx],
                denominator,
                sub,
            )
            total = value if total is None else total + value
            terms[term] = float(value.detach())
        return total, {"terms": terms, **logs}

    def _loss(self, s_out, s_head, t_out, t_head, mask, labels, is_student, denominator, kwargs) -> torch.Tensor:
        common = {
            "mask": mask,
            "reduction": self.reduction,
            "denominator": denominator,
            "labels": labels,
            "is_student_response": is_student,
            **kwargs,
        }
        if s_head is None:
            return compute_loss(self.name, s_out, t_out, **common)
        if t_head is None:  # a SparseTarget from the teacher cache (or no teacher)
            return chunked_loss(self.name, s_out, s_head, teacher_logits=t_out, **common)
        return chunked_loss(self.name, s_out, s_head, teacher_hidden=t_out, teacher_weight=t_head, **common)


def _rows(value: Any, idx: torch.Tensor, batch: int) -> Any:
    """Select rows of per-sequence tensors (e.g. per-sample alphas)."""
    return value[idx] if isinstance(value, torch.Tensor) and value.dim() == 1 and len(value) == batch else value


def unwrap(model):
    """The model inside a DDP/FSDP wrapper (itself otherwise)."""
    return model.module if hasattr(model, "module") else model


def validation_nll(model, rows: list[Row], batch_size: int, pad_id: int, vocab: int, device) -> float:
    """Mean token NLL of ``model`` on ``rows``' responses (the trainer's validation loss); the model is left in
    training mode."""
    model.eval()
    tot, n = 0.0, 0
    with torch.no_grad():
        for i in range(0, len(rows), batch_size):
            b = collate(rows[i : i + batch_size], pad_id)
            labels, mask = shift_targets(b["labels"])
            logits = model(**model_inputs(b, device)).logits[:, :-1, :vocab]
            tot += float(nll(logits, labels=labels.to(device)).sum())  # 0 where masked
            n += int(mask.sum())
    model.train()
    return tot / max(1, n)
