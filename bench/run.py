"""``distillm-bench run``: a suite from models to leaderboard, as content-addressed stages.

Stages, in order (``bench/suite.py`` configures them):

1. ``teacher``: (world and smoke suites) train the teacher in-process by SFT on its tasks' gold answers;
2. ``prompts``: distillation prompts from the task registry's decontaminated pools, in four disjoint slices:
   train, a labelled subset of train (ground truth for the init and SFT), validation (the only prompts DistiLLM's
   schedule reads) and held-out (fidelity evaluation);
3. ``responses``: the teacher's responses to the train, validation and held-out prompts (the labelled subset keeps
   its ground truth, and validation keeps it where the pool has one);
4. ``init``: the student initialisation by SFT on the labelled subset (or, without one, the teacher's responses);
5. ``train:<method>:s<seed>``: every method and seed from the init, with an equal token budget (SFT on the labelled
   subset, the distillation methods on the train prompts), saving snapshots for the learning curves;
6. ``eval:<model>``: fidelity to the teacher on held-out prompts plus the suite's tasks, for the teacher, the init
   and every trained student (and, with ``train.curve_points``, each snapshot: the record's ``curve``); each writes
   a record under ``<run>/records/``;
7. the leaderboard tables and plots, re-rendered from the records.

Every stage's key is a hash of its resolved config and of its inputs' keys. Its outputs live in the shared store,
``<output_root>/stages/<stage>-<key>/`` (``bench/store.py``), which ``<run>/stages/`` links to, and a ``done.json``
written last marks it finished: any run with the same stage skips it, and a killed run picks up where it stopped
(training stages also resume from their own checkpoints).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench import store
from bench.contention import PeakRSS, threads_summary
from bench.record import Record
from bench.run_eval import attach_record, evaluate_model
from bench.stage_config import (
    Inputs,
    config_key,
    init_config,
    method_config,
    planned,
    teacher_config,
    teacher_encoding,
)
from bench.stage_images import copy_images, image_path, render_images
from bench.store import stage_lock, store_root
from bench.suite import SuiteConfig, as_dict
from bench.tables import write_throughput
from distill.atomic import atomic_write_json, atomic_write_jsonl
from distill.config import config_to_dict, save_config

#: Part of every stage key. Bump it when a stage's outputs change for the same suite config (a fix in the
#: trainer, the evaluation or the data path), so that no run reuses stages computed by the older code.
#: 2: eval.max_new_tokens reaches the tasks; on-policy sampling keeps each method's temperature; chunked loss.
#: 3: validation prompts distinct from held-out ones; LR schedules decay over the token budget; labelled subset.
#: 4: training stages keyed by the hash of their real TrainConfig (bench/stage_config.py); the teacher's
#:    ModelConfig and sampling settings reach the trainer whole.
PIPELINE_VERSION = 4


def _sha(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:12]


@dataclass
class Stage:
    name: str
    key: str
    run: Callable[[Path], dict[str, Any]]
    estimate_s: float
    deps: list[str] = field(default_factory=list)

    @property
    def entry_name(self) -> str:
        return f"{self.name.replace(':', '-')}-{self.key}"

    def dir(self, run_dir: Path) -> Path:
        """Where the stage's outputs live: its entry in the shared store (``bench/store.py``)."""
        return store_root(run_dir) / self.entry_name

    def done(self, run_dir: Path) -> dict[str, Any] | None:
        """The stage's ``done.json``, from the store or (written before the store) from the run directory itself."""
        for marker in (self.dir(run_dir) / "done.json", run_dir / "stages" / self.entry_name / "done.json"):
            if marker.is_file():
                return json.loads(marker.read_text())
        return None


class SuiteRun:
    """Builds the stage graph of a suite and runs it."""

    def __init__(self, cfg: SuiteConfig):
        self.cfg = cfg
        self.run_dir = Path(cfg.output_root) / cfg.resolved_run_id
        self.stages: list[Stage] = []
        self._build()

    # ------------------------------------------------------------------ graph
    def _add(self, name: str, spec: Any, deps: list[str], run, estimate: float) -> Stage:
        keys = [self.by_name(d).key for d in deps]
        stage = Stage(
            name, _sha({"name": name, "spec": spec, "deps": keys, "pipeline": PIPELINE_VERSION}), run, estimate, deps
        )
        self.stages.append(stage)
        return stage

    def by_name(self, name: str) -> Stage:
        for s in self.stages:
            if s.name == name:
                return s
        raise KeyError(name)

    def _build(self) -> None:
        c, est = self.cfg, self.cfg.estimate
        teacher_deps = []
        if c.teacher_train.enabled:
            tt = as_dict(c)["teacher_train"]
            gold = {k: tt[k] for k in ("tasks", "examples_per_task", "task_weights")}  # what gold.jsonl holds
            self._add(
                "teacher",
                {"gold": gold, "config": config_key(teacher_config(c, "@teacher:gold", "@stage"))},
                [],
                self._run_teacher,
                est.teacher_train_s,
            )
            teacher_deps = ["teacher"]
        self._add("prompts", as_dict(c)["prompts"], [], self._run_prompts, 2.0)
        n_prompts = c.prompts.n_train + c.prompts.n_heldout
        data, sampling = teacher_encoding(c)  # the train slice's epoch 0, as the training stages read it
        encoding = {"max_prompt_len": data.max_prompt_len, "max_len": data.max_len, "chat": data.chat}
        self._add(
            "responses",
            {
                "teacher": as_dict(c)["teacher"],
                "sampling": as_dict(c)["teacher_sampling"],
                "encoding": encoding,
                "train_sampling": config_to_dict(sampling),
            },  # fmt: skip
            ["prompts", *teacher_deps],
            self._run_responses,
            est.teacher_gen_s_per_prompt * n_prompts,
        )
        inputs = planned(c)
        self._add(
            "init",
            {"config": config_key(init_config(c, inputs))},
            ["responses", *teacher_deps],
            self._run_init,
            est.init_s_per_example_epoch * c.prompts.n_train * c.init.epochs + 10,
        )
        for method in c.methods:
            for seed in c.seeds:
                # the key is the hash of the stage's real TrainConfig: two suites (or a sweep and a suite) that
                # train a method the same way share the stage
                spec = {"config": config_key(method_config(c, method, seed, inputs))}
                tokens = c.train.token_budget or c.train.epochs * c.prompts.n_train * c.teacher_sampling.max_new_tokens
                cost = est.train_s_per_1k_tokens.get(method, 2.0) * tokens / 1000 + est.stage_overhead_s
                self._add(
                    f"train:{method}:s{seed}",
                    spec,
                    ["init", "responses", *teacher_deps],
                    self._trainer(method, seed),
                    cost,
                )
        eval_spec = as_dict(c)["eval"] | {"pipeline": list(c.eval.pipeline_checks)}
        self._add(
            "eval:teacher",
            eval_spec,
            ["responses", *teacher_deps],
            self._evaluator("teacher", None, None),
            est.eval_s_per_model * 1.6,
        )
        self._add(
            "eval:init",
            eval_spec | {"curve_points": c.train.curve_points},  # the init's record holds the curves' 0-token point
            ["responses", "init"],
            self._evaluator("student-init", None, None),
            est.eval_s_per_model,
        )
        for method in c.methods:
            for seed in c.seeds:
                self._add(
                    f"eval:{method}:s{seed}",
                    eval_spec,
                    ["responses", f"train:{method}:s{seed}"],
                    self._evaluator("method", method, seed),
                    est.eval_s_per_model,
                )

    # ------------------------------------------------------------------ execution
    def forced(self, force: list[str] | tuple[str, ...] = ()) -> list[Stage]:
        """The stages ``--force`` names (a stage, or a prefix such as ``train``); an unknown name is an error."""
        unknown = [f for f in force if not any(s.name == f or s.name.startswith(f + ":") for s in self.stages)]
        if unknown:
            raise ValueError(
                f"--force {unknown[0]!r} matches no stage; stages: {', '.join(s.name for s in self.stages)}"
            )
        return [s for s in self.stages if any(s.name == f or s.name.startswith(f + ":") for f in force)]

    def plan(self, force: list[str] | tuple[str, ...] = ()) -> list[dict[str, Any]]:
        """Every stage with its key and whether it is cached (a forced stage is shown as to be redone). Reads only:
        a stage still in a run directory from before the store counts as cached (``Stage.done``)."""
        redo = {s.name for s in self.forced(force)}
        rows = []
        for s in self.stages:
            done = s.done(self.run_dir) and s.name not in redo
            rows.append(
                {
                    "stage": s.name,
                    "key": s.key,
                    "status": "cached" if done else ("forced" if s.name in redo else "todo"),
                    "estimate_s": 0.0 if done else round(s.estimate_s, 1),
                }
            )
        return rows

    def run(
        self, force: list[str] = (), progress: bool = True, until: str | None = None, wait: bool = False
    ) -> dict[str, Any]:
        """Run every stage not yet done (``until``: stop after that stage, writing no tables); returns a summary.
        One run at a time per run directory (:mod:`bench.lock`; ``wait``: wait for the other one instead of
        refusing)."""
        from bench.lock import run_lock

        if until is not None and until not in [s.name for s in self.stages]:  # before anything is written
            raise ValueError(f"--until {until!r} is no stage; stages: {', '.join(s.name for s in self.stages)}")
        self.forced(force)  # an unknown --force name fails here too
        with run_lock(self.run_dir, wait=wait):
            return self._run(force, progress, until)

    def _run(self, force, progress: bool, until: str | None) -> dict[str, Any]:
        from tqdm.auto import tqdm

        from bench.plots import write_plots
        from bench.tables import write_all

        self.run_dir.mkdir(parents=True, exist_ok=True)
        save_config(self.cfg, self.run_dir / "suite.yaml")
        import torch

        from bench.contention import choose_threads

        if self.cfg.threads:
            torch.set_num_threads(self.cfg.threads)
        max_threads, threads_log = torch.get_num_threads(), {}
        store.adopt_all(self.run_dir.parent)  # run dirs from before the shared store: their stages become shared
        redo = {s.name for s in self.forced(force)}
        t0, ran, skipped = time.perf_counter(), [], []
        bar = tqdm(self.stages, desc=f"suite {self.cfg.name}", unit="stage", disable=not progress, position=0)
        for s in bar:
            bar.set_postfix_str(s.name)
            d = s.dir(self.run_dir)
            with stage_lock(d):  # another run computing the same stage: wait for it, then reuse its result
                if s.name in redo:
                    shutil.rmtree(d, ignore_errors=True)
                if (d / "done.json").is_file():
                    store.link(self.run_dir, d)
                    attach_record(self, s.name, d)
                    skipped.append(s.name)
                    if s.name == until:
                        break
                    continue
                d.mkdir(parents=True, exist_ok=True)  # a training stage cut off resumes from its checkpoint
                store.link(self.run_dir, d)
                if not self.cfg.threads:  # auto: one thread where the other core is busy
                    threads_log[s.name] = choose_threads(max_threads).as_dict()
                start = time.perf_counter()
                out = s.run(d)
                atomic_write_json(
                    d / "done.json", {"stage": s.name, "key": s.key, "seconds": time.perf_counter() - start, **out}
                )
            ran.append(s.name)
            _fault_hook(len(ran))
            if s.name == until:
                break
        bar.close()
        threads = threads_summary(self.cfg.threads, max_threads, threads_log)
        if until is not None:
            return {"run_dir": str(self.run_dir), "ran": ran, "skipped": skipped, "threads": threads, "outputs": []}
        records = self._collect_records()
        written = write_all(self.run_dir) + write_plots(self.run_dir, records)
        summary = {
            "run_dir": str(self.run_dir),
            "ran": ran,
            "skipped": skipped,
            "wall_s": round(time.perf_counter() - t0, 1),
            "records": len(records),
            "outputs": [str(p) for p in written],
            "threads": threads,
        }
        summary["outputs"] += [str(p) for p in write_throughput(self.cfg, records, summary["threads"])]
        atomic_write_json(self.run_dir / "run_summary.json", summary)
        return summary

    def _collect_records(self) -> list[Record]:
        return [Record.read(p) for p in sorted((self.run_dir / "records").glob("*.json"))]

    def output(self, name: str) -> dict[str, Any]:
        done = self.by_name(name).done(self.run_dir)
        if done is None:
            raise RuntimeError(f"stage {name} has not finished")
        return done

    # ------------------------------------------------------------------ stage bodies
    def _teacher_model(self):
        from distill.models import ModelConfig

        c = self.cfg
        if c.teacher_train.enabled:
            return ModelConfig(name=self.output("teacher")["model"], dtype=c.teacher.dtype)
        return c.teacher

    def _run_teacher(self, d: Path) -> dict[str, Any]:
        from tasks import get_task

        tt = self.cfg.teacher_train
        rows = []
        for name in tt.tasks:
            task = get_task(name)
            n, pool = round(tt.examples_per_task * tt.task_weights.get(name, 1.0)), task.examples("train")
            if len(pool) < n:
                raise ValueError(f"teacher_train: task {name!r} has {len(pool)} training examples; {n} were asked for")
            for ex in pool[:n]:
                row = {"prompt": task.prompt(ex), "response": task.gold(ex).strip()}
                if task.needs_image:
                    row["image_of"] = {"task": name, "id": ex.id, "split": "train"}
                rows.append(row)
        atomic_write_jsonl(d / "gold.jsonl", render_images(rows, d))
        summary = self._train(teacher_config(self.cfg, str(d / "gold.jsonl"), str(d / "train")))
        return {"model": str(d / "train" / "final"), "train": summary}

    def _run_prompts(self, d: Path) -> dict[str, Any]:
        from tasks.prompts import prompt_slices

        p = self.cfg.prompts
        slices = prompt_slices(
            p.pools, p.n_train, p.n_val, p.n_heldout, p.n_labelled, p.seed, p.data_files, p.responses_from == "pool"
        )
        out = {}
        for split, split_rows in slices.items():
            split_rows = render_images(split_rows, d)  # image rows: their images under d/images
            atomic_write_jsonl(d / f"{split}_prompts.jsonl", split_rows)
            out[split], out[f"n_{split}"] = str(d / f"{split}_prompts.jsonl"), len(split_rows)
        return out

    def _run_responses(self, d: Path) -> dict[str, Any]:
        """The teacher's responses to each prompt slice, through the trainer's own code path
        (:class:`TeacherResponses`, epoch 0): the train slice is encoded and capped exactly as the training stages
        encode it, so SeqKD's and DistiLLM-2's epoch 0 are read from ``generations/`` here, not sampled again."""
        from distill.data import encode_prompt
        from distill.generation import HFGenerator, TeacherResponses, teacher_sampling_for
        from distill.models import load_for_inference

        c = self.cfg
        teacher_cfg = self._teacher_model()
        model, tok = load_for_inference(teacher_cfg)  # a 7B teacher generates on the GPU, not the CPU
        data, train_sampling = teacher_encoding(c)  # the training stages' prompt encoding, length and sampling
        out: dict[str, Any] = {"generations": str(d / "generations")}
        for split in ("train", "val", "heldout", "labelled"):
            src_file = Path(self.output("prompts")[split])
            src = copy_images([json.loads(x) for x in src_file.read_text().splitlines()], src_file.parent, d)
            prompts = [r["prompt"] for r in src]
            images = [image_path(r, d) for r in src]
            extra = [{"image": r["image"]} if r.get("image") else {} for r in src]
            if not src:
                atomic_write_jsonl(d / f"{split}.jsonl", [])
                out[split], out[f"{split}_tokens"] = str(d / f"{split}.jsonl"), 0
                continue
            # the ground truth: the dataset's own (e.g. Dolly in DistiLLM), the labelled subset, and validation
            # wherever the pool has it (DistiLLM validates on ground-truth responses)
            gold = c.prompts.responses_from == "pool" or split == "labelled"
            gold = gold or (split == "val" and all(r["response"] is not None for r in src))
            if gold:
                rows = [
                    {
                        "prompt": r["prompt"],
                        "response": r["response"],
                        "finish_reason": "data",
                        "tokens": len(tok(r["response"])["input_ids"]),
                    }
                    | x
                    for r, x in zip(src, extra, strict=True)
                ]
            else:
                if split == "train":  # encoded and capped exactly as the training stages encode it
                    ids = [
                        encode_prompt(tok, p, data.max_prompt_len, data.chat, i)
                        for p, i in zip(prompts, images, strict=True)
                    ]
                    sp = teacher_sampling_for(train_sampling, ids, data.max_len)
                elif any(images):  # not trained on: whole prompts, the suite's own length
                    ids = [encode_prompt(tok, p, 10**6, True, i) for p, i in zip(prompts, images, strict=True)]
                    sp = teacher_sampling_for(c.teacher_sampling, ids, None)
                else:
                    ids = HFGenerator(model, tok).encode_prompts(prompts)
                    sp = teacher_sampling_for(c.teacher_sampling, ids, None)
                gen = TeacherResponses(teacher_cfg, model, tok, ids, sp, d / "generations", c.train.gen_batch_size)
                rows = [
                    {"prompt": p, "response": r["text"], "finish_reason": r["finish_reason"], "tokens": len(r["ids"])}
                    | x
                    for p, r, x in zip(prompts, gen.rows(0), extra, strict=True)
                ]
            atomic_write_jsonl(d / f"{split}.jsonl", rows)
            out[split] = str(d / f"{split}.jsonl")
            out[f"{split}_tokens"] = sum(r["tokens"] for r in rows)
        return out

    def _inputs(self, out_dir: Path, init: bool = False) -> Inputs:
        """The paths a training stage reads, from the finished stages before it (``init``: the init stage itself,
        which has no init to read)."""
        responses = self.output("responses")
        return Inputs(
            teacher=self._teacher_model(),
            init="" if init else self.output("init")["model"],
            train_file=responses["train"],
            val_file=responses["val"],
            labelled_file=responses["labelled"] if self.cfg.prompts.n_labelled else None,
            teacher_responses=responses["generations"],
            output_dir=str(out_dir),
        )

    def _train(self, cfg) -> dict[str, Any]:
        from distill.train import train

        with PeakRSS() as rss:
            summary = train(cfg)
        return {**summary, "peak_rss_mib": round(rss.peak, 1), "metrics": str(Path(cfg.output_dir) / "metrics.jsonl")}

    def _run_init(self, d: Path) -> dict[str, Any]:
        summary = self._train(init_config(self.cfg, self._inputs(d / "train", init=True)))
        return {"model": str(d / "train" / "final"), "train": summary}

    def _trainer(self, method: str, seed: int) -> Callable[[Path], dict[str, Any]]:
        def run(d: Path) -> dict[str, Any]:
            summary = self._train(method_config(self.cfg, method, seed, self._inputs(d / "train")))
            return {"model": str(d / "train" / "final"), "train": summary}

        return run

    def _evaluator(self, role: str, method: str | None, seed: int | None) -> Callable[[Path], dict[str, Any]]:
        def run(d: Path) -> dict[str, Any]:
            return evaluate_model(self, d, role, method, seed)

        return run


def _fault_hook(n_done: int) -> None:
    """Fault injection: ``DISTILLM_FAULT_KILL_AFTER_STAGES=N`` sends SIGKILL (or ``DISTILLM_FAULT_SIGNAL``) after N."""
    at = os.environ.get("DISTILLM_FAULT_KILL_AFTER_STAGES")
    if at is not None and int(at) == n_done:
        os.kill(os.getpid(), getattr(signal, os.environ.get("DISTILLM_FAULT_SIGNAL", "SIGKILL")))
