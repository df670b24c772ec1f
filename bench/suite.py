"""Suite configs: what ``distillm-bench run`` trains and evaluates.

A suite names a teacher (optionally trained in-process first), a student (a model of its own, or derived from the
teacher by pruning or fake quantisation), a prompt source, the methods and seeds, the per-method token budget and
the evaluation. Suites ship as YAML under ``bench/suites/``: ``world`` (the default: the controlled world, trained
in-process), ``smollm2`` (real weights: a quantised SmolLM2 recovered with LoRA), ``smoke`` (the pipeline on tiny
models), and the paper suites with the DistiLLM / DistiLLM-2 hyperparameters for GPU boxes with hub access.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from distill.config import ConfigError, config_to_dict, did_you_mean, load_config, require
from distill.generation import SamplingParams
from distill.methods import COMPARED, METHODS
from distill.models import ModelConfig

SUITES_DIR = Path(__file__).resolve().parent / "suites"
#: ``distillm-bench run`` without a suite: the controlled world, trained in-process (bench/suites/world.yaml)
DEFAULT_SUITE = "world"


@dataclass
class TeacherTrainConfig:
    """Train the teacher first (smoke suites: a tiny random model learns the smoke tasks by SFT)."""

    enabled: bool = False
    tasks: list[str] = field(default_factory=lambda: ["arith", "string-ops", "tiny-func"])
    examples_per_task: int = field(default=200, metadata={"min": 1})
    task_weights: dict[str, float] = field(
        default_factory=dict,
        metadata={"help": "task -> multiplier of examples_per_task (default 1), e.g. more of a harder task"},
    )
    epochs: int = field(default=6, metadata={"min": 1})
    lr: float = field(default=3e-3, metadata={"min": 0.0, "exclusive_min": True})
    batch_size: int = field(default=16, metadata={"min": 1})
    overrides: list[str] = field(
        default_factory=list, metadata={"help": "TrainConfig key=value for the teacher's training run"}
    )


@dataclass
class PromptsConfig:
    """Distillation prompts: drawn from the task registry's decontaminated training pools."""

    pools: list[str] = field(default_factory=lambda: ["ifeval-synth", "string-ops", "arith", "tiny-func"])
    n_train: int = field(default=256, metadata={"min": 1})
    n_heldout: int = field(default=64, metadata={"min": 1})
    n_val: int = field(
        default=16,
        metadata={
            "help": "validation prompts (DistiLLM's schedule reads their loss), disjoint from train and held-out",
            "min": 1,
        },
    )
    n_labelled: int = field(
        default=0,
        metadata={
            "help": "ground-truth labelled subset of the train prompts (pool responses) for the init and SFT; "
            "0: both train on the teacher's responses",
            "min": 0,
        },
    )
    seed: int = field(default=0, metadata={"min": 0})
    responses_from: str = field(
        default="teacher",
        metadata={
            "help": "ground truth: 'teacher' responses, or the pool's own 'pool' responses",
            "choices": ["teacher", "pool"],
        },
    )
    data_files: dict[str, str] = field(default_factory=dict, metadata={"help": "pool -> local file (online pools)"})


@dataclass
class InitConfig:
    """Student initialisation by SFT on the (teacher-written) ground truth, as both papers do."""

    enabled: bool = True
    epochs: int = field(default=1, metadata={"min": 1})
    lr: float = field(default=1e-3, metadata={"min": 0.0, "exclusive_min": True})
    batch_size: int = field(default=8, metadata={"min": 1})


@dataclass
class SuiteTrainConfig:
    """Settings shared by every method's training run."""

    token_budget: int | None = field(
        default=12000, metadata={"help": "target tokens per method and seed (null: train for `epochs`)", "min": 1}
    )
    epochs: int = field(default=1, metadata={"help": "epochs when token_budget is null", "min": 1})
    grad_accum: int = field(default=1, metadata={"min": 1})
    lr: float = field(default=5e-4, metadata={"min": 0.0, "exclusive_min": True})
    batch_size: int = field(default=8, metadata={"min": 1})
    warmup_steps: int = field(default=5, metadata={"min": 0})
    max_prompt_len: int = field(default=256, metadata={"min": 1})
    max_len: int = field(default=384, metadata={"min": 2})
    student_max_new_tokens: int = field(default=128, metadata={"min": 1})
    mixed_precision: str = field(default="no", metadata={"choices": ["auto", "no", "bf16", "fp16"]})
    gen_batch_size: int = field(default=64, metadata={"min": 1})
    chunked_loss: bool = field(
        default=True, metadata={"help": "fused lm_head + loss on response tokens only (faster, less memory)"}
    )
    validation: str = field(
        default="auto",
        metadata={
            "choices": ["on", "auto", "off"],
            "help": "held-out NLL during training; auto: only for DistiLLM, whose schedule reads it",
        },
    )
    overrides: list[str] = field(
        default_factory=list, metadata={"help": "TrainConfig key=value for every method, e.g. distillm.phi_init=0.2"}
    )
    method_overrides: dict[str, list[str]] = field(default_factory=dict, metadata={"help": "method -> key=value"})
    curve_points: int = field(
        default=0,
        metadata={
            "help": "evaluate each run at this many points along its token budget (the last is the final model), "
            "for learning curves; 0: the final model only",
            "min": 0,
        },
    )


@dataclass
class SuiteEvalConfig:
    tasks: dict[str, int] = field(
        default_factory=lambda: {"ifeval-synth": 20, "mtbench-ref": 10, "humaneval": 10, "arith": 20, "math500": 10}
    )
    pipeline_checks: list[str] = field(
        default_factory=lambda: ["humaneval", "math500"],
        metadata={"help": "tasks where the teacher scores ~0: labelled as pipeline checks"},
    )
    not_averaged: list[str] = field(
        default_factory=list,
        metadata={"help": "tasks shown but left out of Avg. (e.g. a sampled variant of a task already counted)"},
    )
    protocol: str = field(default="task", metadata={"choices": ["task", "distillm", "greedy"]})
    split: str = field(
        default="test",
        metadata={
            "choices": ["test", "val"],
            "help": "the tasks' split to score: test (reported), val (tuning: `distillm-bench sweep`)",
        },
    )
    fidelity: bool = field(default=True, metadata={"help": "KL/NLL/ROUGE-L against the teacher on held-out prompts"})
    rouge_max_new_tokens: int = field(default=128, metadata={"min": 1})
    max_new_tokens: int | None = field(
        default=None, metadata={"help": "cap every task's generation length (None: the task's own)", "min": 1}
    )
    dtype: str = field(default="auto", metadata={"choices": ["auto", "float32", "bfloat16", "float16"]})
    batch_size: int = field(default=32, metadata={"min": 1})
    max_length: int = field(default=1024, metadata={"min": 16})
    backend: str = field(default="hf", metadata={"choices": ["hf", "vllm"]})
    data_files: dict[str, str] = field(
        default_factory=dict, metadata={"help": "task -> local file standing in for its hub data (exact schema)"}
    )
    curve_tasks: dict[str, int] = field(
        default_factory=dict,
        metadata={
            "help": "tasks (a subset of eval.tasks) -> first-N examples for the learning-curve points (default: the full eval)"
        },
    )


@dataclass
class EstimateConfig:
    """Cost model behind ``--plan`` (seconds), measured on the 2-core CPU box for SmolLM2 (docs/sizing.md)."""

    teacher_gen_s_per_prompt: float = 0.28
    train_s_per_1k_tokens: dict[str, float] = field(
        default_factory=lambda: {
            "sft": 1.0,
            "seqkd": 1.0,
            "kd": 1.8,
            "imitkd": 2.2,
            "gkd": 2.05,
            "distillm": 2.0,
            "distillm2": 2.0,
            "distillm_v1_batched": 2.0,
            "dpkd": 2.0,
        }
    )
    init_s_per_example_epoch: float = 0.14
    eval_s_per_model: float = 25.0
    teacher_train_s: float = 0.0
    stage_overhead_s: float = field(default=8.0, metadata={"help": "fixed cost of a training stage (model loads)"})


@dataclass
class SuiteConfig:
    name: str = field(
        default="custom",
        metadata={
            "help": "names the run dir and results/benchmarks/<name>-* (a suite without one never writes world's)"
        },
    )
    description: str = ""
    teacher: ModelConfig = field(default_factory=lambda: ModelConfig(name="smollm2-135m-instruct", dtype="bfloat16"))
    student: ModelConfig = field(
        default_factory=lambda: ModelConfig(name="smollm2-135m-instruct", prune_layers=8, dtype="float32")
    )
    teacher_train: TeacherTrainConfig = field(default_factory=TeacherTrainConfig)
    prompts: PromptsConfig = field(default_factory=PromptsConfig)
    teacher_sampling: SamplingParams = field(
        default_factory=lambda: SamplingParams(temperature=0.8, top_p=0.95, max_new_tokens=128)
    )
    init: InitConfig = field(default_factory=InitConfig)
    methods: list[str] = field(default_factory=lambda: list(COMPARED))
    seeds: list[int] = field(default_factory=lambda: [0, 1])
    train: SuiteTrainConfig = field(default_factory=SuiteTrainConfig)
    eval: SuiteEvalConfig = field(default_factory=SuiteEvalConfig)
    estimate: EstimateConfig = field(default_factory=EstimateConfig)
    output_root: str = "results"
    run_id: str = field(default="", metadata={"help": "default: <name>-<config hash>"})
    cache_dir: str | None = None
    threads: int = field(
        default=0,
        metadata={
            "help": "torch threads; 0: auto (a short calibration picks 1 thread when the other core is busy, where "
            "multi-threaded torch collapses)",
            "min": 0,
        },
    )

    def __post_init__(self) -> None:
        require(bool(self.methods), "a suite needs at least one method")
        require(not Path(self.output_root).is_file(), f"output_root={self.output_root} is a file, not a directory")
        unknown = [m for m in self.methods if m not in METHODS]
        require(
            not unknown,
            f"unknown method {unknown[0] if unknown else ''!r}{did_you_mean(unknown[0], METHODS) if unknown else ''}; "
            f"known: {', '.join(METHODS)}",
        )
        require(bool(self.seeds), "a suite needs at least one seed")
        require(len(set(self.seeds)) == len(self.seeds), f"duplicate seeds: {self.seeds}")
        unknown_w = sorted(set(self.teacher_train.task_weights) - set(self.teacher_train.tasks))
        require(not unknown_w, f"teacher_train.task_weights: {unknown_w} not among teacher_train.tasks")
        require(
            self.prompts.n_labelled <= self.prompts.n_train,
            f"prompts.n_labelled ({self.prompts.n_labelled}) exceeds prompts.n_train ({self.prompts.n_train})",
        )
        if self.train.curve_points:
            require(self.train.token_budget is not None, "train.curve_points needs train.token_budget")
        unknown_avg = sorted(set(self.eval.not_averaged) - set(self.eval.tasks))
        require(not unknown_avg, f"eval.not_averaged: {unknown_avg} not among eval.tasks")
        unknown_files = sorted(set(self.eval.data_files) - set(self.eval.tasks))
        require(not unknown_files, f"eval.data_files: {unknown_files} not among eval.tasks")
        unknown_curve = sorted(set(self.eval.curve_tasks) - set(self.eval.tasks))
        require(not unknown_curve, f"eval.curve_tasks: {unknown_curve} not among eval.tasks")
        self._check_names()
        self._check_train_overrides()

    def _check_names(self) -> None:
        """Every task and prompt pool the suite names is registered (so ``--plan`` catches a typo, not the first
        evaluation stage after training)."""
        import difflib

        from bench.evaluate import BUILTIN_PREFIX
        from tasks import TASKS
        from tasks.prompts import POOLS

        def check(where: str, names, known) -> None:
            for name in names:
                if name.startswith(BUILTIN_PREFIX) and known is TASKS:  # lm-eval's own tasks (online)
                    continue
                if name not in known:
                    close = difflib.get_close_matches(name, list(known), n=1)
                    hint = f" (did you mean {close[0]!r}?)" if close else ""
                    raise ConfigError(f"{where}: unknown {'pool' if known is POOLS else 'task'} {name!r}{hint}")

        check("eval.tasks", self.eval.tasks, TASKS)
        check("eval.pipeline_checks", self.eval.pipeline_checks, TASKS)
        check("prompts.pools", self.prompts.pools, POOLS)
        if self.teacher_train.enabled:
            check("teacher_train.tasks", self.teacher_train.tasks, TASKS)

    def _check_train_overrides(self) -> None:
        """Build every training stage's ``TrainConfig`` now (``bench/stage_config.py``), with placeholders for the
        paths that earlier stages produce, so that a typo anywhere in ``train:`` or ``teacher_train:``
        (``optim.lrr=1e-3``) or a value the trainer refuses fails when the suite loads (and ``--plan``), in one line
        naming the key, not when its first training stage starts."""
        from bench.stage_config import init_config, method_config, planned, teacher_config

        unknown = sorted(set(self.train.method_overrides) - set(METHODS))
        require(not unknown, f"train.method_overrides: unknown method {unknown[:1]}; known: {', '.join(METHODS)}")
        inputs = planned(self)
        if self.teacher_train.enabled:
            teacher_config(self, "@teacher:gold", inputs.output_dir)
        init_config(self, inputs)
        for m in self.methods:
            method_config(self, m, self.seeds[0], inputs)

    @property
    def hash(self) -> str:
        d = config_to_dict(self)
        for key in ("output_root", "run_id", "estimate", "description", "cache_dir", "threads"):
            d.pop(key, None)
        return hashlib.sha256(json.dumps(d, sort_keys=True, default=str).encode()).hexdigest()[:16]

    @property
    def resolved_run_id(self) -> str:
        return self.run_id or f"{self.name}-{self.hash[:8]}"


def resolve_suite_path(name_or_path: str | None) -> Path:
    """A suite file path, or a shipped suite name (``world``, ``smollm2``, ``smoke``, ``paper-...``)."""
    if name_or_path is None:
        return SUITES_DIR / f"{DEFAULT_SUITE}.yaml"
    p = Path(name_or_path)
    if p.suffix in (".yaml", ".yml") or p.exists():
        return p
    shipped = SUITES_DIR / f"{name_or_path}.yaml"
    if not shipped.is_file():
        names = sorted(f.stem for f in SUITES_DIR.glob("*.yaml"))
        raise FileNotFoundError(
            f"unknown suite {name_or_path!r}{did_you_mean(name_or_path, names)}; shipped suites: {', '.join(names)}"
        )
    return shipped


def load_suite(name_or_path: str | None, overrides: list[str] | tuple[str, ...] = ()) -> SuiteConfig:
    return load_config(SuiteConfig, resolve_suite_path(name_or_path), overrides)


def as_dict(cfg: SuiteConfig) -> dict[str, Any]:
    return config_to_dict(cfg)
