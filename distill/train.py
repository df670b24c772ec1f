"""The training loop: one explicit loop for every method, written with ``accelerate``. No Trainer subclass.

A method is a data policy (:mod:`distill.sampling`) plus a loss from :data:`distill.losses.LOSSES`
(:data:`METHODS`). Each optimizer step:

1. the sampler returns the rows of each micro-batch (generating student outputs where the policy says so);
2. the number of target tokens (or sequences, or pairs) of the **whole step**, across ranks, is counted after any
   generation, and every micro-batch's loss is normalised by it. Gradient accumulation and data parallelism then
   give the same update as one big batch;
3. forward the student (and the frozen teacher under ``no_grad``), loss, backward; a NaN/inf loss stops training
   with one line naming the step and the loss terms (the last good checkpoint is kept);
4. clip, step, log a line to ``metrics.jsonl``, validate and checkpoint on schedule.

``distillm-bench train CONFIG.yaml [key=value ...]`` runs it; see :class:`TrainConfig`.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch

from distill import checkpoint as ckpt
from distill.atomic import atomic_dir, atomic_write_jsonl
from distill.chunked import chunked_loss
from distill.config import ConfigError, config_to_dict, require, save_config
from distill.data import Example, Row, collate, encode_example, encode_prompt, read_examples, shift_targets
from distill.generation import HFGenerator, SamplingParams
from distill.losses import LOSSES, check_loss_kwargs, compute_loss, sequence_logps
from distill.methods import METHODS, Method  # noqa: F401  (Method: re-exported for users of distill.train)
from distill.models import ModelConfig, aligned_vocab_size, load_from_config
from distill.sampling import (
    AdaptiveOffPolicySampler,
    BatchedOnPolicySampler,
    OfflineSampler,
    OnPolicyMixSampler,
    Plan,
    ReplaySchedule,
    Sampler,
    derive_seed,
)
from distill.schedules import AlphaCurriculum, DistiLLM2Config, beta_at


@dataclass
class DataConfig:
    train_file: str = field(default="", metadata={"help": "JSONL rows {prompt, response?}"})
    val_file: str | None = field(default=None, metadata={"help": "JSONL; default: hold out val_fraction"})
    val_fraction: float = field(default=0.1, metadata={"min": 0.0, "max": 0.5})
    response_source: Literal["auto", "data", "teacher"] = "auto"
    max_prompt_len: int = field(default=256, metadata={"min": 1})
    max_len: int = field(default=512, metadata={"min": 2})
    chat: bool = True
    limit: int | None = field(default=None, metadata={"help": "use the first N training examples", "min": 1})
    group_by_length: bool = field(
        default=False,
        metadata={
            "help": "offline methods: batches of similar length (less padding, faster steps). Batches then tend to "
            "hold one kind of example: on the world's mixed-task teacher data it cost up to 0.8 accuracy (measured)"
        },
    )


@dataclass
class OptimConfig:
    lr: float = field(default=5e-4, metadata={"min": 0.0, "exclusive_min": True})
    weight_decay: float = field(default=0.0, metadata={"min": 0.0})
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    warmup_steps: int = field(default=0, metadata={"min": 0})
    schedule: Literal["constant", "cosine", "linear"] = "constant"
    min_lr_ratio: float = field(default=0.0, metadata={"min": 0.0, "max": 1.0})
    grad_clip: float = field(default=1.0, metadata={"help": "0 disables clipping", "min": 0.0})
    batch_size: int = field(default=8, metadata={"help": "prompts per micro-batch per rank", "min": 1})
    grad_accum: int = field(default=1, metadata={"min": 1})
    epochs: int = field(default=1, metadata={"min": 1})
    max_steps: int | None = field(default=None, metadata={"min": 1})
    max_tokens: int | None = field(
        default=None, metadata={"help": "stop once this many target tokens were trained (equal budgets)", "min": 1}
    )


@dataclass
class DistiLLMConfig:
    """DistiLLM adaptive off-policy knobs (methods.md §2.3, reference defaults)."""

    phi_init: float = field(default=0.0, metadata={"min": 0.0, "max": 1.0})
    phi_step: float = field(default=0.1, metadata={"min": 0.0, "max": 1.0})
    loss_eps: float = field(default=0.1, metadata={"min": 0.0})
    buffer_capacity: int = field(default=1000, metadata={"min": 1})
    replay_ratio: ReplaySchedule = "decreasing"


@dataclass
class LoraConfig:
    enabled: bool = False
    r: int = field(default=16, metadata={"min": 1})
    alpha: int = field(default=32, metadata={"min": 1})
    dropout: float = field(default=0.05, metadata={"min": 0.0, "max": 1.0})
    target_modules: str = field(default="all-linear", metadata={"help": "peft target_modules"})


@dataclass
class TeacherCacheConfig:
    """Top-k teacher log-probs on disk for fixed rows (see distill/teacher_cache.py)."""

    enabled: bool = False
    top_k: int = field(default=64, metadata={"min": 1})


@dataclass
class TrainConfig:
    method: str = field(default="kd", metadata={"help": "a METHODS name: sft, kd, seqkd, imitkd, gkd, distillm, ..."})
    teacher: ModelConfig = field(default_factory=lambda: ModelConfig(name="tiny-llama"))
    student: ModelConfig = field(default_factory=lambda: ModelConfig(name="tiny-llama", prune_layers=2))
    loss: str | None = field(default=None, metadata={"help": "override the method's loss (a LOSSES name)"})
    loss_kwargs: dict[str, Any] = field(default_factory=dict)
    reduction: Literal["token", "sequence"] | None = None
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    distillm: DistiLLMConfig = field(default_factory=DistiLLMConfig)
    distillm2: DistiLLM2Config = field(default_factory=DistiLLM2Config)
    gkd_lambda: float = field(default=0.5, metadata={"help": "GKD on-policy fraction", "min": 0.0, "max": 1.0})
    student_sampling: SamplingParams | None = field(
        default=None,
        metadata={
            "help": "on-policy sampling; null: the method's own (DistiLLM T=1, DistiLLM-2 T=0.8/top-p 0.95). "
            "Setting any key replaces the whole default (unset keys take SamplingParams' defaults: greedy)"
        },
    )
    student_max_new_tokens: int | None = field(
        default=None, metadata={"help": "cap on student generation length, keeping the sampling settings", "min": 1}
    )
    teacher_sampling: SamplingParams = field(
        default_factory=lambda: SamplingParams(temperature=0.8, top_p=0.95, max_new_tokens=256)
    )
    gen_batch_size: int = field(default=64, metadata={"min": 1})
    gen_backend: Literal["hf", "vllm"] = field(default="hf", metadata={"help": "student generation backend"})
    teacher_cache: TeacherCacheConfig = field(default_factory=TeacherCacheConfig)
    lora: LoraConfig = field(default_factory=LoraConfig)
    mixed_precision: Literal["auto", "no", "bf16", "fp16"] = field(
        default="no", metadata={"help": "auto: bf16 autocast where bf16 is native (fast_bf16), else no"}
    )
    chunked_loss: bool = field(default=False, metadata={"help": "fused linear loss over hidden states"})
    eval_every: int = field(default=0, metadata={"help": "validation every N steps; 0 = once per epoch", "min": 0})
    validation: Literal["on", "auto", "off"] = field(
        default="on",
        metadata={
            "help": "held-out NLL at the start, every eval_every steps and at the end; auto: only where the data "
            "policy reads it (DistiLLM's adaptive off-policy schedule)"
        },
    )
    save_every: int = field(default=0, metadata={"help": "checkpoint every N steps; 0 = only at the end", "min": 0})
    snapshot_tokens: list[int] = field(
        default_factory=list,
        metadata={
            "help": "save the student's weights (no optimizer) once this many target tokens were trained, for "
            "learning curves: <output_dir>/snapshots/tokens-<N>/",
            "min": 1,
        },
    )
    checkpoint_at_end: bool = field(
        default=True,
        metadata={"help": "write a resumable checkpoint (optimizer, sampler, RNG) after the last step too"},
    )
    keep_checkpoints: int = field(default=2, metadata={"min": 0})
    resume: str = field(default="auto", metadata={"help": "auto | never | a checkpoint dir"})
    tensorboard: bool = False
    cache_dir: str | None = field(default=None, metadata={"help": "teacher-generation cache (default: user cache)"})
    output_dir: str = "results/train"
    seed: int = field(default=0, metadata={"min": 0})

    def __post_init__(self) -> None:
        require(self.method in METHODS, f"unknown method {self.method!r}; allowed: {', '.join(METHODS)}")
        require(
            self.validation != "off" or not METHODS[self.method].reads_validation,
            f"validation=off: method {self.method!r} adapts its off-policy ratio to the validation loss; "
            "use validation=on or auto",
        )
        require(bool(self.data.train_file), "data.train_file is required (a JSONL file of {prompt, response?})")
        require(self.data.max_prompt_len < self.data.max_len, "data.max_prompt_len must be < data.max_len")
        loss = self.loss or METHODS[self.method].loss
        kwargs = {**(METHODS[self.method].loss_kwargs if self.loss is None else {}), **self.loss_kwargs}
        try:
            check_loss_kwargs(loss, kwargs)
        except ValueError as err:
            raise ConfigError(str(err)) from None


class TrainingError(RuntimeError):
    """Training cannot continue (e.g. a non-finite loss); the message is one line."""


# --------------------------------------------------------------------------------------------- setup helpers


def _student_sampling(cfg: TrainConfig, max_new: int) -> SamplingParams:
    if cfg.student_sampling is not None:
        sp = cfg.student_sampling
    elif cfg.method in ("distillm2", "distillm_v1_batched", "dpkd"):
        sp = SamplingParams(temperature=0.8, top_p=0.95, max_new_tokens=256)  # DistiLLM-2 generate_vllm.py
    else:
        sp = SamplingParams(temperature=1.0, top_p=1.0, max_new_tokens=256)  # DistiLLM sampler.py
    cap = min(sp.max_new_tokens, max_new, cfg.student_max_new_tokens or max_new)
    return SamplingParams(**{**vars(sp), "max_new_tokens": cap, "n": 1})


def _teacher_generation_key(cfg: TrainConfig, tok, prompts: list[list[int]], sp: SamplingParams, epoch: int) -> str:
    h = hashlib.sha256()
    h.update(json.dumps(config_to_dict(cfg.teacher), sort_keys=True).encode())
    h.update(json.dumps(sorted(tok.get_vocab().items())).encode())
    h.update(json.dumps(prompts).encode())
    h.update(json.dumps({**vars(sp), "seed": derive_seed(sp.seed, "teacher", epoch)}, sort_keys=True).encode())
    return h.hexdigest()[:24]


class TeacherResponses:
    """Teacher responses per epoch, computed once and cached on disk (shared by methods and runs).

    Their seed comes from ``teacher_sampling.seed`` and the epoch, not from the training seed: the teacher does not
    change, so every method and training seed of a benchmark trains on the same teacher samples.
    """

    def __init__(self, cfg: TrainConfig, teacher, tok, prompts: list[list[int]], sp: SamplingParams, timer: dict):
        from distill.models import default_cache_dir

        self.cfg, self.teacher, self.tok, self.prompts, self.sp, self.timer = cfg, teacher, tok, prompts, sp, timer
        self.root = Path(cfg.cache_dir or default_cache_dir()) / "generations"
        #: generation key -> seconds, charged once per run (kept in checkpoints: a resumed run neither loses the cost
        #: of an epoch its sampler already holds nor counts a replayed one twice)
        self.charged: dict[str, float] = {}

    @property
    def seconds(self) -> float:
        return sum(self.charged.values())

    def __call__(self, epoch: int) -> list[list[int]]:
        """The teacher's responses for ``epoch``. Their generation time is charged (:attr:`charged`) whether they were generated now or read from the cache (which stores the seconds they took), so every
        method and seed reports the teacher sampling it depends on, not only the run that filled the cache."""
        key = _teacher_generation_key(self.cfg, self.tok, self.prompts, self.sp, epoch)
        path = self.root / f"{key}.jsonl"
        meta = path.with_suffix(".meta.json")
        if path.is_file():
            self.charged.setdefault(key, json.loads(meta.read_text())["seconds"] if meta.is_file() else 0.0)
            return [json.loads(line)["ids"] for line in path.read_text().splitlines()]
        t0 = time.perf_counter()
        gen = HFGenerator(self.teacher, self.tok, batch_size=self.cfg.gen_batch_size, progress="teacher responses")
        sp = SamplingParams(**{**vars(self.sp), "seed": derive_seed(self.sp.seed, "teacher", epoch)})
        out = [c[0].token_ids for c in gen.generate_ids(self.prompts, sp)]
        seconds = time.perf_counter() - t0
        from distill.atomic import atomic_write_json

        atomic_write_json(meta, {"seconds": seconds, "prompts": len(out)})
        atomic_write_jsonl(path, ({"ids": ids} for ids in out))
        self.charged.setdefault(key, seconds)
        self.timer["teacher_generation_live"] = self.timer.get("teacher_generation_live", 0.0) + seconds
        return out


def _make_sampler(cfg: TrainConfig, plan: Plan, data_rows, prompts, teacher_resp, gen_student) -> Sampler:
    method = METHODS[cfg.method]
    if method.sampler == "offline":
        return OfflineSampler(plan, cfg.seed, data_rows(), cfg.data.group_by_length)
    if method.sampler == "on_policy":
        lam = method.lam if method.lam is not None else cfg.gkd_lambda
        return OnPolicyMixSampler(plan, cfg.seed, data_rows(), gen_student, lam)
    if method.sampler == "adaptive":
        d = cfg.distillm
        return AdaptiveOffPolicySampler(
            plan,
            cfg.seed,
            data_rows(),
            gen_student,
            phi_init=d.phi_init,
            phi_step=d.phi_step,
            loss_eps=d.loss_eps,
            capacity=d.buffer_capacity,
            schedule=d.replay_ratio,
        )
    return BatchedOnPolicySampler(plan, cfg.seed, prompts, teacher_resp, gen_student)


def _lr_lambda(cfg: OptimConfig, total: int, budget_progress=None):
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


# --------------------------------------------------------------------------------------------- the loss of a batch


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
        self.contrastive = self.name == "distillm2_contrastive"
        self.curriculum = AlphaCurriculum(cfg.distillm2) if self.contrastive else None
        if self.contrastive:
            self.kwargs.setdefault("alpha_teacher", cfg.distillm2.alpha0)
            self.kwargs.setdefault("alpha_student", cfg.distillm2.alpha0)

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
        with torch.set_grad_enabled(grad):
            if not self.cfg.chunked_loss:
                return model(**args).logits[:, :-1, : self.vocab], None
            # logits_to_keep=1: the full [B, T, V] logits are never formed; the last hidden state is post-norm
            out = model(**args, output_hidden_states=True, logits_to_keep=1)
            head = _unwrap(model).get_output_embeddings().weight[: self.vocab]
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
            if cacheable and not self.contrastive and not any(r.is_student for r in rows):
                t_out = self.cache.target(rows, labels.shape[1]).to(labels.device)
            else:
                t_out, t_head = self._forward(self.teacher, batch, grad=False)
        kwargs = dict(self.kwargs)
        logs: dict[str, Any] = {}
        if self.contrastive:
            kwargs["beta"] = step_info["beta"]
            s_lp, t_lp = self._seq_logps(s_out, s_head, labels), self._seq_logps(t_out, t_head, labels)
            a_t, a_s, active = self.curriculum.alphas(step_info["epoch"], t_lp, s_lp, is_student)
            if active:
                kwargs["alpha_teacher"], kwargs["alpha_student"] = a_t, a_s
            logs = {"alpha": [round(float(a), 5) for a in a_t], "alpha_active": active}
            if (~is_student).any():
                logs["logq_teacher_resp"] = float(s_lp[~is_student].mean())
            if is_student.any():
                logs["logq_student_resp"] = float(s_lp[is_student].mean())
        # a loss that depends on the row's role gets one term per role (DistiLLM-2: SKL on y_t, SRKL on y_s)
        groups = {"loss": torch.arange(len(is_student))}
        if self.contrastive:
            groups = {
                "skl_teacher_resp": (~is_student).nonzero().squeeze(1),
                "srkl_student_resp": is_student.nonzero().squeeze(1),
            }
        total, terms = None, {}
        for term, idx in groups.items():
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


def _unwrap(model):
    return model.module if hasattr(model, "module") else model


# --------------------------------------------------------------------------------------------- the loop


def _split_examples(cfg: TrainConfig) -> tuple[list[Example], list[Example]]:
    train = read_examples(cfg.data.train_file)
    if cfg.data.limit:
        train = train[: cfg.data.limit]
    if cfg.data.val_file:
        return train, read_examples(cfg.data.val_file)
    n_val = int(len(train) * cfg.data.val_fraction)
    order = torch.randperm(len(train), generator=torch.Generator().manual_seed(derive_seed(cfg.seed, "val"))).tolist()
    val = {*order[:n_val]}
    return [e for i, e in enumerate(train) if i not in val], [e for i, e in enumerate(train) if i in val]


def _apply_lora(cfg: LoraConfig, model):
    from peft import LoraConfig as PeftLoraConfig
    from peft import get_peft_model

    peft_cfg = PeftLoraConfig(
        r=cfg.r,
        lora_alpha=cfg.alpha,
        lora_dropout=cfg.dropout,
        target_modules=cfg.target_modules,
        task_type="CAUSAL_LM",
    )
    return get_peft_model(model, peft_cfg)


def _kill_hook(step: int) -> None:
    """Fault injection for the resume tests: ``DISTILLM_FAULT_KILL_AT_STEP=N`` SIGKILLs the process after step N."""
    at = os.environ.get("DISTILLM_FAULT_KILL_AT_STEP")
    if at is not None and int(at) == step:
        os.kill(os.getpid(), signal.SIGKILL)


def train(cfg: TrainConfig) -> dict[str, Any]:
    """Run training as configured; returns a summary (also written to ``<output_dir>/summary.json``)."""
    from accelerate import Accelerator
    from accelerate.utils import gather_object
    from tqdm.auto import tqdm

    from distill.models import fast_bf16

    precision = cfg.mixed_precision if cfg.mixed_precision != "auto" else ("bf16" if fast_bf16() else "no")
    _reset_precision(precision)
    acc = Accelerator(mixed_precision=precision, cpu=not torch.cuda.is_available())
    out_dir = Path(cfg.output_dir)
    torch.manual_seed(derive_seed(cfg.seed, "init"))
    method = METHODS[cfg.method]

    teacher, t_tok = load_from_config(cfg.teacher)
    student, s_tok = load_from_config(cfg.student)
    vocab = aligned_vocab_size(teacher, student, t_tok, s_tok)
    teacher = _prepare_teacher(acc, teacher.requires_grad_(False).eval())
    student.train()
    if cfg.lora.enabled:
        student = _apply_lora(cfg.lora, student)

    train_ex, val_ex = _split_examples(cfg)
    d = cfg.data
    prompts = [encode_prompt(s_tok, e.prompt, d.max_prompt_len, d.chat) for e in train_ex]
    max_new = d.max_len - max(len(p) for p in prompts)
    timer = {"generation": 0.0, "train": 0.0, "teacher_generation_live": 0.0}
    teacher_sp = SamplingParams(
        **{**vars(cfg.teacher_sampling), "max_new_tokens": min(cfg.teacher_sampling.max_new_tokens, max_new), "n": 1}
    )
    teacher_resp = TeacherResponses(cfg, teacher, t_tok, prompts, teacher_sp, timer)
    has_responses = all(e.response is not None for e in train_ex)
    source = method.source if method.source != "auto" else d.response_source
    if source == "auto":
        source = "data" if has_responses else "teacher"
    if source == "data" and not has_responses:
        raise TrainingError(
            f"method {cfg.method!r} trains on ground-truth responses but {d.train_file} has rows without 'response'"
        )

    def data_rows() -> list[Row]:
        if source == "data":
            return [encode_example(s_tok, e, d.max_prompt_len, d.max_len, d.chat) for e in train_ex]
        return [Row(p, r[: d.max_len - len(p)], "teacher") for p, r in zip(prompts, teacher_resp(0), strict=True)]

    gen_sp = _student_sampling(cfg, max_new)

    vllm_engine: list = []

    def gen_student(prompt_ids: list[list[int]], seed: int) -> list[list[int]]:
        t0 = time.perf_counter()
        model = _unwrap(acc.unwrap_model(student))
        if cfg.gen_backend == "vllm":
            gen = _vllm_student(vllm_engine, model, s_tok, out_dir)
            gen.load_weights(model.merge_and_unload() if hasattr(model, "merge_and_unload") else model)
        else:
            gen = HFGenerator(model, s_tok, batch_size=cfg.gen_batch_size)
        with acc.autocast():  # bf16 generation on CPU is ~2x faster than fp32 (docs/sizing.md §2)
            comps = gen.generate_ids(prompt_ids, SamplingParams(**{**vars(gen_sp), "seed": seed}))
        out = [c[0].token_ids for c in comps]
        timer["generation"] += time.perf_counter() - t0
        return out

    world, rank = acc.num_processes, acc.process_index
    plan = Plan(
        cfg.optim.batch_size, cfg.optim.grad_accum, len(train_ex), cfg.optim.epochs, cfg.optim.max_steps, world, rank
    )
    sampler = _make_sampler(cfg, plan, data_rows, prompts, teacher_resp, gen_student)
    total = plan.total_steps

    o = cfg.optim
    decay = [p for n, p in student.named_parameters() if p.requires_grad and p.dim() >= 2]
    no_decay = [p for n, p in student.named_parameters() if p.requires_grad and p.dim() < 2]
    groups = [{"params": decay, "weight_decay": o.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    optimizer = torch.optim.AdamW(groups, lr=o.lr, betas=tuple(o.betas))
    budget_state = {"tokens": 0}
    budget_progress = (lambda: budget_state["tokens"] / o.max_tokens) if o.max_tokens else None
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, _lr_lambda(o, total, budget_progress))
    student, optimizer = acc.prepare(student, optimizer)
    cache = None
    if cfg.teacher_cache.enabled:
        from distill.models import default_cache_dir
        from distill.teacher_cache import TeacherCache

        root = cfg.cache_dir or default_cache_dir()
        cache = TeacherCache(root, teacher, t_tok, config_to_dict(cfg.teacher), cfg.teacher_cache.top_k, vocab)
    losses = LossComputer(cfg, student, teacher, vocab, cache)

    val_rows = [
        encode_example(s_tok, e, d.max_prompt_len, d.max_len, d.chat) for e in val_ex if e.response is not None
    ]

    validating = cfg.validation == "on" or (cfg.validation == "auto" and method.reads_validation)

    def validate() -> float | None:
        """Student token NLL on held-out ground-truth responses (DistiLLM's validation loss)."""
        if not val_rows or not validating:
            return None
        model = acc.unwrap_model(student)
        model.eval()
        tot, n = 0.0, 0
        with torch.no_grad():
            for i in range(0, len(val_rows), cfg.optim.batch_size):
                b = collate(val_rows[i : i + cfg.optim.batch_size], s_tok.pad_token_id)
                labels, mask = shift_targets(b["labels"])
                logits = model(
                    input_ids=b["input_ids"].to(acc.device), attention_mask=b["attention_mask"].to(acc.device)
                ).logits[:, :-1, :vocab]
                lp = torch.log_softmax(logits.float(), -1).gather(-1, labels.clamp_min(0).to(acc.device)[..., None])[
                    ..., 0
                ]
                tot += float(-(lp * mask.to(acc.device)).sum())
                n += int(mask.sum())
        model.train()
        return tot / max(1, n)

    # ---- resume
    start, state = 0, {"tokens": 0, "steps": 0, "elapsed": 0.0, "generation_s": 0.0, "train_s": 0.0}
    resume_from = (
        None
        if cfg.resume == "never"
        else (ckpt.latest_checkpoint(out_dir) if cfg.resume == "auto" else Path(cfg.resume))
    )
    if resume_from is not None:
        if not resume_from.is_dir():
            raise FileNotFoundError(f"resume checkpoint not found: {resume_from}")
        saved_sha = ckpt.load_trainer_state(resume_from).get("config_sha")
        if saved_sha != _config_sha(cfg):
            raise TrainingError(
                f"checkpoint {resume_from} was written with a different config; use resume=never or a new output_dir"
            )
        start, state = _restore(resume_from, acc, student, optimizer, scheduler, sampler, losses, rank)
        teacher_resp.charged.update(state.get("teacher_charged", {}))
        budget_state["tokens"] = state["tokens"]
    if acc.is_main_process:
        save_config(cfg, out_dir / "config.yaml")
    metrics_path = out_dir / "metrics.jsonl"
    if acc.is_main_process:
        _truncate_metrics(metrics_path, start)
    tb = _tensorboard(cfg, out_dir) if acc.is_main_process else None

    eval_every = cfg.eval_every or plan.steps_per_epoch
    if start == 0:
        v = validate()
        if v is not None:
            sampler.on_validation(v)
            state["val_loss"] = v
    bar = tqdm(
        total=_expected_steps(cfg, total, train_ex, s_tok, world),
        initial=start,
        desc=f"train {cfg.method}",
        disable=not acc.is_main_process,
        dynamic_ncols=True,
    )
    t_run = time.perf_counter() - state["elapsed"]
    for step in range(start, total):
        t_step, g0, live0 = time.perf_counter(), timer["generation"], timer["teacher_generation_live"]
        epoch = step // plan.steps_per_epoch
        progress = step / max(1, total)
        if o.max_tokens:  # a token budget: schedules follow the fraction of the budget spent
            progress = max(progress, state["tokens"] / o.max_tokens)
        sampler.progress = progress
        micro = sampler.batches(step)
        batches = [collate(rows, s_tok.pad_token_id, d.max_len) for rows in micro]
        denom = float(acc.reduce(torch.tensor(losses.denominator(batches), device=acc.device), "sum"))
        beta = beta_at(cfg.distillm2, step, total, plan.steps_per_epoch, cfg.optim.epochs, progress)
        info = {"epoch": epoch, "beta": beta}
        step_terms: dict[str, float] = {}
        extra: dict[str, Any] = {}
        for m, b in enumerate(batches):
            b = {k: v.to(acc.device) for k, v in b.items()}
            ctx = acc.no_sync(student) if m < len(batches) - 1 else contextlib.nullcontext()
            with ctx, acc.autocast():
                loss, logs = losses(b, max(denom, 1.0), info, micro[m])
            if loss is None:
                continue
            if not torch.isfinite(loss.detach()):
                terms = ", ".join(f"{k}={v:.4g}" for k, v in logs["terms"].items())
                raise TrainingError(
                    f"non-finite loss at step {step + 1} (micro-batch {m}): {terms}; last good checkpoint kept"
                )
            acc.backward(loss * world)  # DDP averages gradients over ranks; the loss is already a global mean
            for k, v in logs.pop("terms").items():
                step_terms[k] = step_terms.get(k, 0.0) + v
            extra.update(logs)
        if world > 1:  # each rank's terms are shares of the global mean: the step's loss is their sum
            step_terms = _sum_dicts(gather_object([step_terms]))
        grad_norm = acc.clip_grad_norm_(student.parameters(), o.grad_clip) if o.grad_clip > 0 else None
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        tokens = int(
            acc.reduce(
                torch.tensor(sum(int(shift_targets(b["labels"])[1].sum()) for b in batches), device=acc.device), "sum"
            )
        )
        budget_state["tokens"] = state["tokens"] + tokens
        scheduler.step()
        # teacher sampling done inside this step (a batched sampler's first epoch) is reported as setup
        # generation, not training time, so a seed that reads it from the cache reports the same cost
        live = timer["teacher_generation_live"] - live0
        t_run += live
        dt, gen_dt = time.perf_counter() - t_step - live, timer["generation"] - g0
        state["tokens"] += tokens
        state["steps"] = step + 1
        state["generation_s"] += gen_dt
        state["train_s"] += dt - gen_dt
        row = {
            "step": step + 1,
            "epoch": epoch,
            "loss": sum(step_terms.values()),
            **step_terms,
            "loss_terms": list(step_terms),
            "lr": scheduler.get_last_lr()[0],
            "grad_norm": None if grad_norm is None else float(grad_norm),
            "tokens": tokens,
            "tokens_per_s": tokens / max(dt, 1e-9),
            "gen_s": gen_dt,
            "train_s": dt - gen_dt,
            **sampler.stats,
            **extra,
        }
        if losses.contrastive:
            row["beta"] = info["beta"]
        done = step + 1 == total or (o.max_tokens is not None and state["tokens"] >= o.max_tokens)
        if (step + 1) % eval_every == 0 or done:
            v = validate()
            if v is not None:
                sampler.on_validation(v)
                row["val_loss"] = state["val_loss"] = v
                row["phi_after"] = getattr(sampler, "phi", None)
        if acc.is_main_process:
            _append_metrics(metrics_path, row)
            if tb is not None:
                for k, v in row.items():
                    if isinstance(v, (int, float)) and v is not None:
                        tb.add_scalar(k, v, step + 1)
        bar.set_postfix(loss=f"{row['loss']:.4f}", tok_s=f"{row['tokens_per_s']:.0f}")
        bar.update(1)
        if o.max_tokens and state["tokens"] < o.max_tokens:  # a token budget: re-estimate the number of steps
            per_step = state["tokens"] / (step + 1)
            bar.total = min(total, step + 1 + math.ceil((o.max_tokens - state["tokens"]) / max(per_step, 1.0)))
            bar.refresh()
        state["elapsed"] = time.perf_counter() - t_run
        for point in cfg.snapshot_tokens:
            if state["tokens"] - tokens < point <= state["tokens"] and acc.is_main_process and not done:
                _snapshot(out_dir / "snapshots" / f"tokens-{point}", acc.unwrap_model(student), s_tok, state)
        if (cfg.save_every and (step + 1) % cfg.save_every == 0) or (done and cfg.checkpoint_at_end):
            state["teacher_charged"] = dict(teacher_resp.charged)
            _save(cfg, out_dir, step + 1, acc, student, optimizer, scheduler, sampler, losses, state, gather_object)
        _kill_hook(step + 1)
        if done:
            break
    bar.close()
    state["teacher_generation_s"] = teacher_resp.seconds
    summary = _finish(cfg, out_dir, acc, student, s_tok, state, state.get("steps", start))
    return summary


def _reset_precision(precision: str) -> None:
    """Let one process train several times at different precisions (a suite's fp32 teacher stage, then bf16
    methods): accelerate keeps its mixed-precision setting in a process-wide singleton and refuses a change. Only
    that setting is reset; the distributed state (process group, device) is kept."""
    from accelerate.state import AcceleratorState

    state = AcceleratorState._shared_state
    if state and state.get("_mixed_precision") not in (None, precision):
        AcceleratorState._reset_state(reset_partial_state=False)


def _expected_steps(cfg: TrainConfig, total: int, train_ex: list[Example], tok, world: int) -> int:
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


def _prepare_teacher(acc, teacher):
    """Frozen teacher placement: plain device move, or an inference engine under DeepSpeed / FSDP."""
    from accelerate.utils import DistributedType

    if acc.distributed_type == DistributedType.DEEPSPEED:
        import copy

        import deepspeed

        ds_cfg = copy.deepcopy(acc.state.deepspeed_plugin.deepspeed_config)
        stage = ds_cfg.get("zero_optimization", {}).get("stage", 0)
        if stage != 3:  # ZeRO-1/2 shard optimizer state only: a frozen teacher needs none of it
            ds_cfg["zero_optimization"] = {"stage": 0}
        for key in ("optimizer", "scheduler"):
            ds_cfg.pop(key, None)
        engine, *_ = deepspeed.initialize(model=teacher, config=ds_cfg)
        return engine.module.eval()
    if acc.distributed_type == DistributedType.FSDP:
        return acc.prepare_model(teacher, evaluation_mode=True).eval()
    return teacher.to(acc.device)


def _vllm_student(holder: list, model, tok, out_dir: Path):
    """One vLLM engine per run over a snapshot of the initial student; weights are synced before each round."""
    if not holder:
        from distill.generation import VLLMGenerator

        snap = out_dir / "vllm-student-init"
        if not (snap / "config.json").is_file():
            with atomic_dir(snap) as tmp:
                model.save_pretrained(tmp)
                tok.save_pretrained(tmp)
        holder.append(VLLMGenerator(str(snap), tok, gpu_memory_utilization=0.3, enforce_eager=True))
    return holder[0]


def _snapshot(dest: Path, model, tok, state: dict[str, Any]) -> None:
    """Weights only (a LoRA student merged into a copy), with the token count it was taken at."""
    if hasattr(model, "merge_and_unload"):
        import copy

        model = copy.deepcopy(model).merge_and_unload()
    with atomic_dir(dest) as tmp:
        model.save_pretrained(tmp, safe_serialization=True)
        tok.save_pretrained(tmp)
        (tmp / "snapshot.json").write_text(json.dumps({"tokens": state["tokens"], "steps": state["steps"]}))


def _sum_dicts(dicts: list[dict[str, float]]) -> dict[str, float]:
    out: dict[str, float] = {}
    for d in dicts:
        for k, v in d.items():
            out[k] = out.get(k, 0.0) + v
    return out


def _save(cfg, out_dir, step, acc, student, optimizer, scheduler, sampler, losses, state, gather_object) -> None:
    mine = {
        "sampler": {
            "sampler": sampler.state_dict(),
            "curriculum": losses.curriculum.state_dict() if losses.curriculum else None,
        },
        "rng": ckpt.rng_state(),
    }
    all_states = gather_object([mine])
    if acc.is_main_process:
        ckpt.save_checkpoint(
            out_dir,
            step,
            student=acc.unwrap_model(student),
            optimizer=optimizer,
            scheduler=scheduler,
            trainer_state={**state, "config_sha": _config_sha(cfg)},
            rank_states=all_states,
            keep=cfg.keep_checkpoints,
        )
    acc.wait_for_everyone()


def _restore(path: Path, acc, student, optimizer, scheduler, sampler, losses, rank) -> tuple[int, dict[str, Any]]:
    from safetensors.torch import load_file

    model = acc.unwrap_model(student)
    files = sorted((path / "student").glob("*.safetensors"))
    if not files:
        raise FileNotFoundError(f"checkpoint {path} has no student weights")
    weights: dict[str, torch.Tensor] = {}
    for f in files:
        weights.update(load_file(f))
    if hasattr(model, "peft_config"):
        from peft import set_peft_model_state_dict

        set_peft_model_state_dict(model, weights)
    else:
        missing, unexpected = model.load_state_dict(weights, strict=False)
        tied = {k for k in missing if "lm_head" in k}
        if set(missing) - tied or unexpected:
            raise ValueError(
                f"checkpoint {path} does not match the student: missing {missing}, unexpected {unexpected}"
            )
    optimizer.load_state_dict(torch.load(path / "optimizer.pt", weights_only=False))
    scheduler.load_state_dict(torch.load(path / "scheduler.pt", weights_only=False))
    rank_state = ckpt.load_rank_state(path, rank)
    sampler.load_state_dict(rank_state["sampler"]["sampler"])
    if losses.curriculum is not None and rank_state["sampler"]["curriculum"] is not None:
        losses.curriculum.load_state_dict(rank_state["sampler"]["curriculum"])
    ckpt.set_rng_state(rank_state["rng"])
    state = ckpt.load_trainer_state(path)
    return int(state.pop("step")), state


def _config_sha(cfg: TrainConfig) -> str:
    """Hash of everything that shapes the trajectory (not ``resume``, logging or checkpoint cadence)."""
    d = config_to_dict(cfg)
    for key in ("resume", "tensorboard", "save_every", "keep_checkpoints", "checkpoint_at_end", "output_dir"):
        d.pop(key, None)
    return hashlib.sha256(json.dumps(d, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _truncate_metrics(path: Path, step: int) -> None:
    """On resume, drop metric rows logged after the checkpoint (they are recomputed identically)."""
    if not path.is_file():
        return
    keep = [line for line in path.read_text().splitlines() if line.strip() and json.loads(line)["step"] <= step]
    from distill.atomic import atomic_write_text

    atomic_write_text(path, "".join(line + "\n" for line in keep))


def _append_metrics(path: Path, row: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as fh:
        fh.write(json.dumps(row) + "\n")


def _tensorboard(cfg: TrainConfig, out_dir: Path):
    if not cfg.tensorboard:
        return None
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        raise TrainingError("tensorboard=true needs the tensorboard package: pip install tensorboard") from None
    return SummaryWriter(str(out_dir / "tensorboard"))


def _finish(cfg, out_dir, acc, student, tok, state, total) -> dict[str, Any]:
    acc.wait_for_everyone()
    summary = {
        "method": cfg.method,
        "steps": total,
        "tokens": state["tokens"],
        "wall_s": state["elapsed"],
        "generation_s": state["generation_s"],
        "train_s": state["train_s"],
        "tokens_per_s": state["tokens"] / max(state["elapsed"], 1e-9),
        "generation_share": state["generation_s"] / max(state["elapsed"], 1e-9),
        "setup_generation_s": state.get("teacher_generation_s", 0.0),
        "snapshots": [
            json.loads((p / "snapshot.json").read_text()) | {"path": str(p)}
            for p in sorted((out_dir / "snapshots").glob("tokens-*"), key=lambda p: int(p.name.split("-")[1]))
        ],
        "val_loss": state.get("val_loss"),
        "final": str(out_dir / "final"),
    }
    if acc.is_main_process:
        model = acc.unwrap_model(student)
        if hasattr(model, "merge_and_unload"):
            model = model.merge_and_unload()
        with atomic_dir(out_dir / "final") as tmp:
            model.save_pretrained(tmp, safe_serialization=True)
            tok.save_pretrained(tmp)
        from distill.atomic import atomic_write_json

        atomic_write_json(out_dir / "summary.json", summary)
    return summary
