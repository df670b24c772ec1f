"""``distillm-bench run SUITE --stand-in``: a suite's dress rehearsal on a CPU, end to end, in a few minutes.

The paper suites are written for GPU boxes with hub access (7B teachers, vLLM, 50k hub prompts). A stand-in run
keeps everything the suite does and shrinks only what needs a GPU or the hub:

* **models**: tiny random models of the suite's own architecture class (GPT-2 for DistiLLM's GPT-2 suite, Qwen2 for
  the Qwen suites, Llama for DeepSeek-Coder, which is a Llama, tiny LLaVAs for the VLM suite), teacher and student
  sharing one tokenizer (and image processor);
* **data**: fixture files in the exact schemas of the hub datasets (``bench/stand_in_data/``: databricks-dolly-15k,
  UltraChat-200k, MetaMathQA, Evol-Instruct-Code-80k, and the evaluation sets: MiniLLM's Dolly, Self-Instruct,
  Vicuna, S-NI, UnNI, GSM8K, MBPP; RLAIF-V, OK-VQA and TextVQA with small rendered images), read by the same
  loaders as the hub rows;
* **sizes**: 16 training prompts, short responses, batches of at most 4 (gradient accumulation cut to fit), and
  the suite's own epochs (1 to 4 optimizer steps each);
* **backends**: ``gen_backend=vllm`` becomes ``hf-engine`` (the engine code path: the merged LoRA snapshot and the
  weight sync before each round, with HF generation behind it), lm-eval's vLLM backend becomes HF, and fp16/bf16
  autocast becomes fp32.

What is kept: the methods, their losses and hyperparameters, LoRA, the schedules (epochs, α curriculum, β), the
evaluation protocol and tasks, the leaderboard. The run is named ``<suite>-stand-in`` so it never writes the real
suite's results.
"""

from __future__ import annotations

from pathlib import Path

from bench.suite import SuiteConfig
from distill.config import ConfigError, config_to_dict, load_config

DATA = Path(__file__).resolve().parent / "stand_in_data"
#: model families by a hub id's name -> the tiny architecture that stands in for them (distill.models tiny-*)
ARCHS = (("llava", "vlm"), ("gpt2", "gpt2"), ("qwen", "qwen2"), ("deepseek-coder", "llama"), ("llama", "llama"),
         ("smollm", "llama"))  # fmt: skip
#: the tiny models standing in for each architecture (a VLM pair: tiny LLaVAs sharing one processor)
TINY = {"vlm": ("vlm-h64-l2-f128", "vlm-h32-l1-f64")}
#: hub prompt pools and evaluation tasks with a fixture file in their exact schema
POOL_FILES = ("dolly-15k", "ultrachat-200k", "metamathqa", "evol-instruct-code", "rlaif-v")
TASK_FILES = ("dolly", "selfinst", "vicuna", "sni", "unni", "gsm8k", "mbpp", "okvqa", "textvqa")
SIZES = {"n_train": 16, "n_val": 4, "n_heldout": 4, "max_new_tokens": 12, "eval_examples": 2}


def stand_in_arch(model_name: str) -> str:
    """The tiny architecture standing in for ``model_name`` (a hub id); one line naming it where there is none."""
    low = model_name.lower()
    for needle, arch in ARCHS:
        if needle in low:
            return arch
    raise ConfigError(f"--stand-in: no stand-in architecture for model {model_name!r}; known families: "
                      f"{', '.join(n for n, _ in ARCHS)}")  # fmt: skip


def stand_in(cfg: SuiteConfig) -> SuiteConfig:
    """``cfg`` as its CPU rehearsal (see the module docstring)."""
    arch = stand_in_arch(cfg.teacher.name)
    n = SIZES
    new = SIZES["max_new_tokens"]
    pools = {p: str(DATA / f"{p}.jsonl") for p in cfg.prompts.pools if p in POOL_FILES}
    tasks = {t: min(k, n["eval_examples"]) for t, k in cfg.eval.tasks.items()}
    task_files = {t: str(DATA / f"{t}.jsonl") for t in tasks if t in TASK_FILES}

    def no_vllm(overrides: list[str]) -> list[str]:  # the engine code path, with HF generation behind it
        vllm = any("gen_backend=vllm" in o.replace(" ", "") for o in overrides)
        return [*overrides, "gen_backend=hf-engine"] if vllm else list(overrides)

    batch = min(cfg.train.batch_size, 4)
    accum = max(1, min(cfg.train.grad_accum, n["n_train"] // batch))  # at least one optimizer step per epoch
    teacher, student = TINY.get(arch, (f"tiny-{arch}-h64-l4", f"tiny-{arch}-h32-l2"))
    overrides = [
        f"name={cfg.name}-stand-in",
        f"teacher={{name: {teacher}, dtype: float32}}",
        f"student={{name: {student}, dtype: float32}}",
        "teacher_train.enabled=false",
        f"prompts.n_train={n['n_train']}",
        f"prompts.n_val={n['n_val']}",
        f"prompts.n_heldout={n['n_heldout']}",
        f"prompts.n_labelled={min(cfg.prompts.n_labelled, n['n_train'] // 2)}",
        f"prompts.data_files={pools}",
        f"teacher_sampling.max_new_tokens={new}",
        f"init.epochs={min(cfg.init.epochs, 2)}",
        f"init.batch_size={min(cfg.init.batch_size, 8)}",
        f"train.max_prompt_len={96 if arch == 'vlm' else 48}",  # a character tokenizer: an image question is longer
        f"train.max_len={120 if arch == 'vlm' else 72}",
        f"train.student_max_new_tokens={new}",
        "train.mixed_precision=no",
        "train.gen_batch_size=16",
        f"train.batch_size={batch}",
        f"train.grad_accum={accum}",
        f"train.warmup_steps={min(cfg.train.warmup_steps, 1)}",
        f"train.overrides={no_vllm(cfg.train.overrides)}",
        f"train.method_overrides={ {m: no_vllm(o) for m, o in cfg.train.method_overrides.items()} }",
        f"eval.tasks={tasks}",
        f"eval.data_files={task_files}",
        "eval.backend=hf",
        "eval.dtype=float32",
        f"eval.max_new_tokens={new}",
        f"eval.rouge_max_new_tokens={new}",
        "eval.batch_size=16",
        "eval.max_length=256",
        # --plan's cost model for the stand-in, from its run alone on this 2-core box (paper-distillm-gpt2: 56 s for
        # 17 stages), not the GPU suite's
        "estimate.teacher_gen_s_per_prompt=0.05",
        "estimate.eval_s_per_model=3",
        "estimate.stage_overhead_s=2",
        "estimate.init_s_per_example_epoch=0.05",
        f"estimate.train_s_per_1k_tokens={ {m: 1.0 for m in cfg.methods} }",
    ]
    if cfg.train.token_budget:
        overrides.append("train.token_budget=600")
    if cfg.train.curve_points:
        overrides.append("train.curve_points=2")
    return load_config(SuiteConfig, data=config_to_dict(cfg), overrides=overrides)
