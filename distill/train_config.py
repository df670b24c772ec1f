"""The trainer's typed config: :class:`TrainConfig` and its sections (``distillm-bench train CONFIG.yaml
[key=value ...]``; ``--help`` of each key is its field's ``help``). Pure data: checked in ``__post_init__``, so a bad
value fails when the config is built, before any work starts."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any, Literal

from distill.config import ConfigError, did_you_mean, require
from distill.generation import SamplingParams
from distill.losses import check_loss_kwargs
from distill.methods import METHODS
from distill.models import ModelConfig
from distill.sampling import SAMPLERS, ReplaySchedule
from distill.schedules import DistiLLM2Config

#: GKD's on-policy fraction λ unless the config sets one
GKD_LAMBDA_DEFAULT = 0.5


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
    student: ModelConfig = field(
        default_factory=lambda: ModelConfig(name="@teacher", prune_layers=2),
        metadata={"help": "default: the teacher with 2 of its layers (student.name=@teacher)"},
    )
    loss: str | None = field(default=None, metadata={"help": "override the method's loss (a LOSSES name)"})
    loss_kwargs: dict[str, Any] = field(default_factory=dict)
    reduction: Literal["token", "sequence"] | None = None
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    distillm: DistiLLMConfig = field(default_factory=DistiLLMConfig)
    distillm2: DistiLLM2Config = field(default_factory=DistiLLM2Config)
    gkd_lambda: float = field(
        default=GKD_LAMBDA_DEFAULT,
        metadata={"help": "GKD's on-policy fraction (methods with a fraction of their own refuse another)",
                  "min": 0.0, "max": 1.0},
    )  # fmt: skip
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
    gen_backend: Literal["hf", "vllm", "hf-engine"] = field(
        default="hf",
        metadata={"help": "student generation: hf (in the training model), vllm (an engine synced each round), "
                  "hf-engine (vllm's code path with HF generation behind it: a CPU rehearsal)"},
    )  # fmt: skip
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
    save_every_min: float = field(
        default=10.0,
        metadata={"help": "also checkpoint once this many minutes passed since the last one (0: off)", "min": 0.0},
    )
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
    teacher_responses: str | None = field(
        default=None,
        metadata={"help": "directory of the teacher's responses, a file per epoch (a suite's responses stage gives "
                  "its own); default: <cache_dir>/generations"},
    )  # fmt: skip
    output_dir: str = "results/train"
    seed: int = field(default=0, metadata={"min": 0})

    def __post_init__(self) -> None:
        require(
            self.method in METHODS,
            f"unknown method {self.method!r}{did_you_mean(self.method, METHODS)}; allowed: {', '.join(METHODS)}",
        )
        if self.student.name == "@teacher":  # derived from the teacher (pruned, quantised ...), as in suites
            self.student.name = self.teacher.name
        sampler = METHODS[self.method].sampler
        require(
            sampler in SAMPLERS, f"method {self.method!r}: unknown sampler {sampler!r}; known: {', '.join(SAMPLERS)}"
        )
        require(
            self.validation != "off" or not METHODS[self.method].reads_validation,
            f"validation=off: method {self.method!r} adapts its off-policy ratio to the validation loss; "
            "use validation=on or auto",
        )
        own = METHODS[self.method].lam
        require(
            own is None or self.gkd_lambda in (own, GKD_LAMBDA_DEFAULT),
            f"gkd_lambda={self.gkd_lambda}: method {self.method!r} fixes its own on-policy fraction at {own} "
            "(distill/methods.py); drop gkd_lambda, or use a method that reads it (gkd)",
        )
        require(not os.path.isfile(self.output_dir), f"output_dir={self.output_dir} is a file, not a directory")
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


class TrainingInterrupted(KeyboardInterrupt):
    """Ctrl-C during training; the message says where it stopped and where a rerun resumes."""
