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
import math
import os
import signal
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from distill import checkpoint as ckpt
from distill.config import config_to_dict, save_config
from distill.data import (
    Example,
    Row,
    collate,
    encode_example,
    encode_prompt,
    require_validation,
    shift_targets,
    split_examples,
    truncation,
    truncation_warning,
    validation_rows,
)
from distill.engines import engine_student
from distill.generation import HFGenerator, SamplingParams, TeacherResponses
from distill.loss_step import LossComputer, unwrap, validation_nll
from distill.methods import METHODS, Method  # noqa: F401  (Method: re-exported for users of distill.train)
from distill.models import aligned_vocab_size, apply_lora, load_from_config, place_teacher, reset_precision
from distill.sampling import (
    Plan,
    Sampler,
    derive_seed,
    make_sampler,
    student_sampling,
)
from distill.schedules import expected_steps, lr_lambda
from distill.train_config import TrainConfig, TrainingError, TrainingInterrupted
from distill.train_io import append_metrics, finish, tensorboard_writer, truncate_metrics
from distill.vision import image_rows_unsupported


def _kill_hook(step: int) -> None:
    """Fault injection for the resume tests: ``DISTILLM_FAULT_KILL_AT_STEP=N`` sends the process SIGKILL (or
    ``DISTILLM_FAULT_SIGNAL``, e.g. ``SIGINT``: a Ctrl-C) after step N."""
    at = os.environ.get("DISTILLM_FAULT_KILL_AT_STEP")
    if at is not None and int(at) == step:
        os.kill(os.getpid(), getattr(signal, os.environ.get("DISTILLM_FAULT_SIGNAL", "SIGKILL")))


def train(cfg: TrainConfig) -> dict[str, Any]:
    """Run training as configured; returns a summary (also written to ``<output_dir>/summary.json``)."""
    run = setup(cfg)
    try:
        return fit(run)
    except KeyboardInterrupt:
        at, saved = run.state.get("steps", run.start), run.timer.get("last_save_step", run.start)
        if saved:
            raise TrainingInterrupted(
                f"interrupted at step {at}; rerun the same command (resume=auto) to resume from step {saved}"
            ) from None
        raise TrainingInterrupted(
            f"interrupted at step {at}, before the first checkpoint (save_every_min={cfg.save_every_min:g}, "
            f"save_every={cfg.save_every}); rerunning the same command starts from step 0"
        ) from None


@dataclass
class Run:
    """Everything :func:`fit` needs, built by :func:`setup`: the models, the data policy, the optimizer and the
    loss, positioned at ``start`` (0, or the step of the checkpoint it resumed from)."""

    cfg: TrainConfig
    acc: Any
    out_dir: Path
    student: Any
    s_tok: Any
    train_ex: list[Example]
    plan: Plan
    sampler: Sampler
    optimizer: Any
    scheduler: Any
    losses: LossComputer
    teacher_resp: TeacherResponses
    timer: dict[str, float]
    budget_state: dict[str, int]  # trained tokens, read by the LR schedule under a token budget
    validate: Callable[[], float | None]
    start: int
    state: dict[str, Any]


def setup(cfg: TrainConfig) -> Run:
    """Load the models, build the method's data policy, the optimizer, the schedule and the loss; resume from the
    latest checkpoint where ``resume`` says so."""
    from accelerate import Accelerator

    from distill.models import fast_bf16

    precision = cfg.mixed_precision if cfg.mixed_precision != "auto" else ("bf16" if fast_bf16() else "no")
    reset_precision(precision)
    acc = Accelerator(mixed_precision=precision, cpu=not torch.cuda.is_available())
    out_dir = Path(cfg.output_dir)
    torch.manual_seed(derive_seed(cfg.seed, "init"))
    method = METHODS[cfg.method]
    train_ex, val_ex = split_examples(cfg.data, cfg.seed)
    if method.reads_validation:
        require_validation(val_ex, cfg.data, cfg.method)  # before the models load
    ckpt.require_resume_dir(cfg.resume)  # before the models load

    teacher, t_tok = load_from_config(cfg.teacher)
    student, s_tok = load_from_config(cfg.student)
    vocab = aligned_vocab_size(teacher, student, t_tok, s_tok)
    teacher = place_teacher(acc, teacher.requires_grad_(False).eval())
    student.train()
    if cfg.lora.enabled:
        student = apply_lora(cfg.lora, student)

    d = cfg.data
    prompts = [encode_prompt(s_tok, e.prompt, d.max_prompt_len, d.chat, e.image) for e in train_ex]
    if why := image_rows_unsupported(cfg.teacher_cache.enabled, cfg.gen_backend, prompts):  # before any work
        raise TrainingError(why)
    max_new = d.max_len - max(len(p) for p in prompts)
    timer = {"generation": 0.0, "teacher_generation_live": 0.0, "last_save": time.perf_counter()}
    teacher_resp = TeacherResponses.for_run(cfg, teacher, t_tok, prompts, timer)
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

    gen_sp = student_sampling(cfg, max_new)

    vllm_engine: list = []

    def gen_student(prompt_ids: list[list[int]], seed: int) -> list[list[int]]:
        t0 = time.perf_counter()
        model = unwrap(acc.unwrap_model(student))
        if cfg.gen_backend != "hf":  # an engine (vllm; hf-engine rehearses its code path on a CPU)
            gen = engine_student(vllm_engine, model, s_tok, out_dir, cfg.gen_backend, cfg.gen_batch_size)
            gen.load_weights(model)  # LoRA: merged into a copy of the weights, never into the training model
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
    sampler = make_sampler(cfg, plan, data_rows, prompts, teacher_resp, gen_student)
    total = plan.total_steps

    o = cfg.optim
    decay = [p for n, p in student.named_parameters() if p.requires_grad and p.dim() >= 2]
    no_decay = [p for n, p in student.named_parameters() if p.requires_grad and p.dim() < 2]
    groups = [{"params": decay, "weight_decay": o.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    optimizer = torch.optim.AdamW(groups, lr=o.lr, betas=tuple(o.betas))
    budget_state = {"tokens": 0}
    budget_progress = (lambda: budget_state["tokens"] / o.max_tokens) if o.max_tokens else None
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda(o, total, budget_progress))
    student, optimizer = acc.prepare(student, optimizer)
    cache = None
    if cfg.teacher_cache.enabled:
        from distill.models import default_cache_dir
        from distill.teacher_cache import TeacherCache

        root = cfg.cache_dir or default_cache_dir()
        cache = TeacherCache(root, teacher, t_tok, config_to_dict(cfg.teacher), cfg.teacher_cache.top_k, vocab)
    losses = LossComputer(cfg, student, teacher, vocab, cache)

    validating = cfg.validation == "on" or (cfg.validation == "auto" and method.reads_validation)
    val_rows = validation_rows(s_tok, val_ex, d, required_by=cfg.method if method.reads_validation else None)

    def validate() -> float | None:
        """Student token NLL on held-out ground-truth responses (DistiLLM's validation loss)."""
        if not val_rows or not validating:
            return None
        model = acc.unwrap_model(student)
        return validation_nll(model, val_rows, cfg.optim.batch_size, s_tok.pad_token_id, vocab, acc.device)

    # ---- resume
    start, state = 0, {"tokens": 0, "steps": 0, "elapsed": 0.0, "generation_s": 0.0, "train_s": 0.0}
    resume_from = (
        None
        if cfg.resume == "never"
        else (ckpt.latest_checkpoint(out_dir) if cfg.resume == "auto" else Path(cfg.resume))
    )
    if resume_from is not None:
        ckpt.check_resumable(resume_from, cfg)
        start, state = ckpt.restore_training_state(
            resume_from, acc, student, optimizer, scheduler, sampler, losses, rank
        )
        if acc.is_main_process:
            print(f"resumed from step {start} ({resume_from})", file=sys.stderr)
        teacher_resp.charged.update(state.get("teacher_charged", {}))
        budget_state["tokens"] = state["tokens"]
    state["truncated"] = truncation(s_tok, train_ex, d)  # in the summary; a warning above TRUNCATION_WARN
    if acc.is_main_process and (warning := truncation_warning(state["truncated"], d)):
        print(warning, file=sys.stderr)
    return Run(
        cfg, acc, out_dir, student, s_tok, train_ex, plan, sampler, optimizer, scheduler, losses, teacher_resp, timer,
        budget_state, validate, start, state,
    )  # fmt: skip


def fit(run: Run) -> dict[str, Any]:
    """The loop: from ``run.start`` to the last step (or the token budget), logging, validating, snapshotting and
    checkpointing on schedule; then the final model and the summary."""
    from tqdm.auto import tqdm

    cfg, acc, o, state, sampler, out_dir = run.cfg, run.acc, run.cfg.optim, run.state, run.sampler, run.out_dir
    total, metrics_path = run.plan.total_steps, out_dir / "metrics.jsonl"
    if acc.is_main_process:
        save_config(cfg, out_dir / "config.yaml")
        truncate_metrics(metrics_path, run.start)
    tb = tensorboard_writer(cfg, out_dir) if acc.is_main_process else None
    eval_every = cfg.eval_every or run.plan.steps_per_epoch
    if run.start == 0:
        v = run.validate()
        if v is not None:
            sampler.on_validation(v)
            state["val_loss"] = v
    # a token-budget run ends before its last planned step: its end checkpoint is complete too
    complete = run.start >= total or bool(o.max_tokens and state.get("tokens", 0) >= o.max_tokens)
    if complete and acc.is_main_process:
        print(f"already complete: step {run.start} of {total}; writing the final model and summary", file=sys.stderr)
    bar = tqdm(
        total=expected_steps(cfg, total, run.train_ex, run.s_tok, acc.num_processes),
        initial=run.start,
        desc=f"train {cfg.method}",
        disable=not acc.is_main_process,
        dynamic_ncols=True,
    )
    t_run = time.perf_counter() - state["elapsed"]
    for step in range(run.start, run.start if complete else total):
        t_step, g0, live0 = time.perf_counter(), run.timer["generation"], run.timer["teacher_generation_live"]
        epoch, info, step_terms, extra, grad_norm, tokens = _step(run, step)
        # teacher sampling done inside this step (a batched sampler's first epoch) is reported as setup
        # generation, not training time, so a seed that reads it from the cache reports the same cost
        live = run.timer["teacher_generation_live"] - live0
        t_run += live
        dt, gen_dt = time.perf_counter() - t_step - live, run.timer["generation"] - g0
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
            "grad_norm": None if grad_norm is None else float(grad_norm),
            "tokens": tokens,
            "tokens_per_s": tokens / max(dt, 1e-9),
            "gen_s": gen_dt,
            "train_s": dt - gen_dt,
            **sampler.stats,
            **extra,
        }
        row.update({k: v for k, v in info.items() if k != "epoch"})  # the loss hook's step values (β)
        done = step + 1 == total or (o.max_tokens is not None and state["tokens"] >= o.max_tokens)
        if (step + 1) % eval_every == 0 or done:
            v = run.validate()
            if v is not None:
                sampler.on_validation(v)
                row["val_loss"] = state["val_loss"] = v
                row["phi_after"] = getattr(sampler, "phi", None)
        if acc.is_main_process:
            append_metrics(metrics_path, row)
            if tb is not None:
                for k, v in row.items():
                    if isinstance(v, (int, float)) and v is not None:
                        tb.add_scalar(k, v, step + 1)
        # refresh=False: the bar redraws at its own rate (tqdm's mininterval; 30 s in a log file), not at every step
        bar.set_postfix(loss=f"{row['loss']:.4f}", tok_s=f"{row['tokens_per_s']:.0f}", refresh=False)
        bar.update(1)
        if o.max_tokens and state["tokens"] < o.max_tokens:  # a token budget: re-estimate the number of steps
            per_step = state["tokens"] / (step + 1)
            bar.total = min(total, step + 1 + math.ceil((o.max_tokens - state["tokens"]) / max(per_step, 1.0)))
        state["elapsed"] = time.perf_counter() - t_run
        _save_on_schedule(run, step, tokens, done)
        _kill_hook(step + 1)
        if done:
            break
    bar.close()
    state["teacher_generation_s"] = run.teacher_resp.seconds
    return finish(cfg, out_dir, acc, run.student, run.s_tok, state, state.get("steps", run.start))


def _step(run: Run, step: int) -> tuple[int, dict[str, Any], dict[str, float], dict[str, Any], Any, int]:
    """One optimizer step: the sampler's micro-batches, loss and backward for each, clip, step, schedule. Returns
    ``(epoch, step info, loss terms, extra logs, grad norm, trained target tokens across ranks)``."""
    from accelerate.utils import gather_object

    cfg, acc, o, plan, losses = run.cfg, run.acc, run.cfg.optim, run.plan, run.losses
    world, total = acc.num_processes, plan.total_steps
    epoch = step // plan.steps_per_epoch
    progress = step / max(1, total)
    if o.max_tokens:  # a token budget: schedules follow the fraction of the budget spent
        progress = max(progress, run.state["tokens"] / o.max_tokens)
    run.sampler.progress = progress
    micro = run.sampler.batches(step)
    batches = [collate(rows, run.s_tok.pad_token_id, cfg.data.max_len) for rows in micro]
    denom = float(acc.reduce(torch.tensor(losses.denominator(batches), device=acc.device), "sum"))
    info = {"epoch": epoch, **losses.hook.step_info(step, total, plan.steps_per_epoch, o.epochs, progress)}
    step_terms: dict[str, float] = {}
    extra: dict[str, Any] = {}
    for m, b in enumerate(batches):
        b = {k: v.to(acc.device) for k, v in b.items()}
        ctx = acc.no_sync(run.student) if m < len(batches) - 1 else contextlib.nullcontext()
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
    grad_norm = acc.clip_grad_norm_(run.student.parameters(), o.grad_clip) if o.grad_clip > 0 else None
    extra["lr"] = run.optimizer.param_groups[0]["lr"]  # the rate this step uses (the scheduler then moves on)
    run.optimizer.step()
    run.optimizer.zero_grad(set_to_none=True)
    tokens = int(
        acc.reduce(
            torch.tensor(sum(int(shift_targets(b["labels"])[1].sum()) for b in batches), device=acc.device), "sum"
        )
    )
    run.budget_state["tokens"] = run.state["tokens"] + tokens
    run.scheduler.step()
    return epoch, info, step_terms, extra, grad_norm, tokens


def _save_on_schedule(run: Run, step: int, tokens: int, done: bool) -> None:
    """Learning-curve snapshots at the token points the step crossed, and a checkpoint on ``save_every`` (steps) or
    ``save_every_min`` (wall time; rank 0's clock decides for every rank)."""
    from accelerate.utils import broadcast_object_list, gather_object

    cfg, acc, state = run.cfg, run.acc, run.state
    for point in cfg.snapshot_tokens:
        if state["tokens"] - tokens < point <= state["tokens"] and acc.is_main_process and not done:
            ckpt.save_snapshot(run.out_dir / "snapshots" / f"tokens-{point}", acc.unwrap_model(run.student),
                               run.s_tok, state)  # fmt: skip
    due = bool(cfg.save_every_min) and time.perf_counter() - run.timer["last_save"] >= 60 * cfg.save_every_min
    if acc.num_processes > 1:
        due = broadcast_object_list([due])[0]
    if (cfg.save_every and (step + 1) % cfg.save_every == 0) or (done and cfg.checkpoint_at_end) or (due and not done):
        run.timer["last_save"], run.timer["last_save_step"] = time.perf_counter(), step + 1
        state["teacher_charged"] = dict(run.teacher_resp.charged)
        ckpt.save_training_state(cfg, run.out_dir, step + 1, acc, run.student, run.optimizer, run.scheduler,
                                 run.sampler, run.losses, state, gather_object)  # fmt: skip


def _sum_dicts(dicts: list[dict[str, float]]) -> dict[str, float]:
    out: dict[str, float] = {}
    for d in dicts:
        for k, v in d.items():
            out[k] = out.get(k, 0.0) + v
    return out
