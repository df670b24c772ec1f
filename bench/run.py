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

Every stage's key is a hash of its resolved config and of its inputs' keys. Its outputs live in
``<run>/stages/<stage>-<key>/`` and a ``done.json`` written last marks it finished: a rerun skips finished stages,
and a killed run picks up where it stopped (training stages also resume from their own checkpoints).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.suite import SuiteConfig, as_dict
from distill.atomic import atomic_write_json, atomic_write_jsonl
from distill.config import load_config, save_config
from distill.methods import METHODS, method_label

RECORD_SCHEMA = "distillm-bench/record/v1"
METHOD_LABELS = {name: method_label(name) for name in METHODS}


#: Part of every stage key. Bump it when a stage's outputs change for the same suite config (a fix in the
#: trainer, the evaluation or the data path), so that no run reuses stages computed by the older code.
#: 2: eval.max_new_tokens reaches the tasks; on-policy sampling keeps each method's temperature; chunked loss.
#: 3: validation prompts distinct from held-out ones; LR schedules decay over the token budget; labelled subset.
PIPELINE_VERSION = 3


def _sha(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:12]


@dataclass
class Stage:
    name: str
    key: str
    run: Callable[[Path], dict[str, Any]]
    estimate_s: float
    deps: list[str] = field(default_factory=list)

    def dir(self, run_dir: Path) -> Path:
        return run_dir / "stages" / f"{self.name.replace(':', '-')}-{self.key}"

    def done(self, run_dir: Path) -> dict[str, Any] | None:
        marker = self.dir(run_dir) / "done.json"
        return json.loads(marker.read_text()) if marker.is_file() else None


class PeakRSS:
    """Peak resident memory of this process while a block runs (sampled from /proc every 0.2 s)."""

    def __enter__(self) -> PeakRSS:
        self.peak, self._stop = _rss_mib(), threading.Event()
        self._t = threading.Thread(target=self._watch, daemon=True)
        self._t.start()
        return self

    def _watch(self) -> None:
        while not self._stop.wait(0.2):
            self.peak = max(self.peak, _rss_mib())

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._t.join()
        self.peak = max(self.peak, _rss_mib())


def _rss_mib() -> float:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


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
            self._add(
                "teacher",
                {"model": as_dict(c)["teacher"], "train": as_dict(c)["teacher_train"]},
                [],
                self._run_teacher,
                est.teacher_train_s,
            )
            teacher_deps = ["teacher"]
        self._add("prompts", as_dict(c)["prompts"], [], self._run_prompts, 2.0)
        n_prompts = c.prompts.n_train + c.prompts.n_heldout
        self._add(
            "responses",
            {"teacher": as_dict(c)["teacher"], "sampling": as_dict(c)["teacher_sampling"]},
            ["prompts", *teacher_deps],
            self._run_responses,
            est.teacher_gen_s_per_prompt * n_prompts,
        )
        shape = {k: as_dict(c)["train"][k] for k in ("max_prompt_len", "max_len", "mixed_precision")}
        init_spec = {"student": as_dict(c)["student"], "init": as_dict(c)["init"], "train": shape}
        self._add(
            "init",
            init_spec,
            ["responses", *teacher_deps],
            self._run_init,
            est.init_s_per_example_epoch * c.prompts.n_train * c.init.epochs + 10,
        )
        train_spec = {k: v for k, v in as_dict(c)["train"].items() if k != "method_overrides"}
        for method in c.methods:
            for seed in c.seeds:
                spec = {
                    "method": method,
                    "seed": seed,
                    "train": train_spec,
                    "method_overrides": c.train.method_overrides.get(method, []),
                }
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
    def plan(self) -> list[dict[str, Any]]:
        rows = []
        for s in self.stages:
            done = s.done(self.run_dir)
            rows.append(
                {
                    "stage": s.name,
                    "key": s.key,
                    "status": "cached" if done else "todo",
                    "estimate_s": 0.0 if done else round(s.estimate_s, 1),
                }
            )
        return rows

    def run(self, force: list[str] = (), progress: bool = True, until: str | None = None) -> dict[str, Any]:
        """Run every stage not yet done (``until``: stop after that stage, writing no tables); returns a summary."""
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
        if until is not None and until not in [s.name for s in self.stages]:
            raise ValueError(f"--until {until!r} is no stage; stages: {', '.join(s.name for s in self.stages)}")
        forced = [s for s in self.stages if any(s.name == f or s.name.startswith(f + ":") for f in force)]
        unknown = [f for f in force if not any(s.name == f or s.name.startswith(f + ":") for s in self.stages)]
        if unknown:
            raise ValueError(
                f"--force {unknown[0]!r} matches no stage; stages: {', '.join(s.name for s in self.stages)}"
            )
        for s in forced:
            shutil.rmtree(s.dir(self.run_dir), ignore_errors=True)
        t0, ran, skipped = time.perf_counter(), [], []
        bar = tqdm(self.stages, desc=f"suite {self.cfg.name}", unit="stage", disable=not progress, position=0)
        for s in bar:
            bar.set_postfix_str(s.name)
            if s.done(self.run_dir):
                skipped.append(s.name)
                if s.name == until:
                    break
                continue
            d = s.dir(self.run_dir)
            d.mkdir(parents=True, exist_ok=True)
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
        threads = _threads_summary(self.cfg.threads, max_threads, threads_log)
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
        summary["outputs"] += [str(p) for p in self._write_throughput(records, summary["threads"])]
        atomic_write_json(self.run_dir / "run_summary.json", summary)
        return summary

    def _write_throughput(self, records: list[dict[str, Any]], threads: dict[str, Any]) -> list[Path]:
        """Tokens/s per method of this run, under ``<output_root>/benchmarks/<suite>-throughput.{md,json}``."""
        from bench.leaderboard import build_cost_table, render_cost
        from distill.atomic import atomic_write_text

        if not any(r["model"]["role"] == "method" for r in records):
            return []
        root = Path(self.cfg.output_root) / "benchmarks"
        table = render_cost(build_cost_table(records), "md")
        note = f"Run `{self.cfg.resolved_run_id}`; threads: {threads['note']}.\n"
        per_method: dict[str, list[float]] = {}
        for r in records:
            if r["model"]["role"] == "method" and r.get("train"):
                per_method.setdefault(r["model"]["method"], []).append(r["train"]["tokens_per_s"])
        data = {
            "suite": self.cfg.name,
            "run_id": self.cfg.resolved_run_id,
            "threads": threads,
            "tokens_per_s": per_method,
            "provenance": _provenance(self.cfg) | {"suite_config": None},
        }
        md_path, json_path = root / f"{self.cfg.name}-throughput.md", root / f"{self.cfg.name}-throughput.json"
        atomic_write_text(md_path, table + "\n" + note)
        atomic_write_json(json_path, data)
        return [md_path, json_path]

    def _collect_records(self) -> list[dict[str, Any]]:
        return [json.loads(p.read_text()) for p in sorted((self.run_dir / "records").glob("*.json"))]

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
                rows.append({"prompt": task.prompt(ex), "response": task.gold(ex).strip()})
        atomic_write_jsonl(d / "gold.jsonl", rows)
        base = as_dict(self.cfg)["teacher"]
        overrides = [
            "method=sft",
            f"teacher.name={base['name']}",
            f"student.name={base['name']}",
            f"data.train_file={d / 'gold.jsonl'}",
            "data.val_fraction=0",
            f"optim.epochs={tt.epochs}",
            f"optim.lr={tt.lr}",
            f"optim.batch_size={tt.batch_size}",
            f"output_dir={d / 'train'}",
            "resume=auto",
            "data.max_len=256",
            "data.max_prompt_len=192",
            "checkpoint_at_end=false",
            *tt.overrides,
        ]
        summary = self._train(overrides)
        return {"model": str(d / "train" / "final"), "train": summary}

    def _run_prompts(self, d: Path) -> dict[str, Any]:
        from tasks.prompts import load_pool

        p = self.cfg.prompts
        per_pool = -(-(p.n_train + p.n_val + p.n_heldout) // len(p.pools))
        rows = []
        for name in p.pools:
            rows.extend(load_pool(name, limit=per_pool, seed=p.seed, data_file=p.data_files.get(name)))
        import random

        random.Random(p.seed).shuffle(rows)
        need = p.n_train + p.n_val + p.n_heldout
        if len(rows) < need:
            raise ValueError(f"prompt pools {p.pools} hold {len(rows)} prompts; the suite needs {need}")
        rows = rows[:need]
        keep = ("prompt", "pool", "response")
        # three disjoint slices: training prompts, validation prompts (the only ones DistiLLM's schedule reads) and
        # held-out prompts (fidelity evaluation only)
        train = [{k: r.get(k) for k in keep} for r in rows[: p.n_train]]
        val = [{k: r.get(k) for k in keep} for r in rows[p.n_train : p.n_train + p.n_val]]
        held = [{k: r.get(k) for k in keep} for r in rows[p.n_train + p.n_val :]]
        if p.responses_from == "pool" and any(r["response"] is None for r in train + val + held):
            raise ValueError(f"prompts.responses_from=pool, but pools {p.pools} have prompts without responses")
        labelled = train[: p.n_labelled]
        if any(r["response"] is None for r in labelled):
            raise ValueError(
                f"prompts.n_labelled={p.n_labelled}, but pools {p.pools} have prompts without a ground-truth response"
            )
        out = {}
        for split, split_rows in (("train", train), ("val", val), ("heldout", held), ("labelled", labelled)):
            atomic_write_jsonl(d / f"{split}_prompts.jsonl", split_rows)
            out[split], out[f"n_{split}"] = str(d / f"{split}_prompts.jsonl"), len(split_rows)
        return out

    def _run_responses(self, d: Path) -> dict[str, Any]:
        from distill.generation import HFGenerator
        from distill.models import load_from_config

        c = self.cfg
        model, tok = load_from_config(self._teacher_model())
        gen = HFGenerator(model, tok, batch_size=c.train.gen_batch_size, progress="teacher responses")
        out = {}
        for split in ("train", "val", "heldout", "labelled"):
            src = [json.loads(x) for x in Path(self.output("prompts")[split]).read_text().splitlines()]
            prompts = [r["prompt"] for r in src]
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
                    for r in src
                ]
            else:
                comps = gen.generate(prompts, c.teacher_sampling)
                rows = [
                    {
                        "prompt": p,
                        "response": cs[0].text,
                        "finish_reason": cs[0].finish_reason,
                        "tokens": len(cs[0].token_ids),
                    }
                    for p, cs in zip(prompts, comps, strict=True)
                ]
            atomic_write_jsonl(d / f"{split}.jsonl", rows)
            out[split] = str(d / f"{split}.jsonl")
            out[f"{split}_tokens"] = sum(r["tokens"] for r in rows)
        return out

    def _train_file(self, ground_truth: bool) -> str:
        """The init and SFT train on the labelled ground truth where the suite has one; the distillation methods
        on the teacher's responses to the (larger) prompt pool."""
        responses = self.output("responses")
        return responses["labelled"] if ground_truth and self.cfg.prompts.n_labelled else responses["train"]

    def _common_train(self, out_dir: Path, ground_truth: bool = False) -> list[str]:
        c, t = self.cfg, self.cfg.train
        tm = self._teacher_model()
        ov = [
            f"teacher.name={tm.name}",
            f"teacher.dtype={tm.dtype}",
            f"data.train_file={self._train_file(ground_truth)}",
            # validation prompts only: DistiLLM's schedule never reads the held-out evaluation prompts
            f"data.val_file={self.output('responses')['val']}",
            "data.val_fraction=0",
            f"data.max_prompt_len={t.max_prompt_len}",
            f"data.max_len={t.max_len}",
            f"output_dir={out_dir}",
            f"mixed_precision={t.mixed_precision}",
            f"gen_batch_size={t.gen_batch_size}",
            f"chunked_loss={t.chunked_loss}",
            f"validation={t.validation}",
            "resume=auto",
            # a stage that finished is recorded by done.json; its optimizer state would be 3x the model, unused
            "checkpoint_at_end=false",
            f"student_max_new_tokens={t.student_max_new_tokens}",  # keeps each method's own sampling
            f"teacher_sampling.max_new_tokens={c.teacher_sampling.max_new_tokens}",
            f"teacher_sampling.temperature={c.teacher_sampling.temperature}",
            f"teacher_sampling.top_p={c.teacher_sampling.top_p}",
        ]
        if c.cache_dir:
            ov.append(f"cache_dir={c.cache_dir}")
        for key, value in (("prune_layers", tm.prune_layers), ("cache_dir", tm.cache_dir)):
            if value is not None:
                ov.append(f"teacher.{key}={value}")
        return ov

    def _train(self, overrides: list[str]) -> dict[str, Any]:
        from distill.train import TrainConfig, train

        cfg = load_config(TrainConfig, None, overrides)
        with PeakRSS() as rss:
            summary = train(cfg)
        return {**summary, "peak_rss_mib": round(rss.peak, 1), "metrics": str(Path(cfg.output_dir) / "metrics.jsonl")}

    def _run_init(self, d: Path) -> dict[str, Any]:
        c = self.cfg
        s = as_dict(c)["student"]
        if s["name"] == "@teacher":  # derive the student from the (possibly freshly trained) teacher
            s["name"] = self._teacher_model().name
        ov = self._common_train(d / "train", ground_truth=True)
        ov += [f"student.{k}={v}" for k, v in s.items() if v is not None and k != "prune_layer_ids"]
        if s.get("prune_layer_ids") is not None:
            ov.append(f"student.prune_layer_ids={s['prune_layer_ids']}")
        ov += [
            "method=sft",
            f"optim.epochs={c.init.epochs}",
            f"optim.lr={c.init.lr}",
            f"optim.batch_size={c.init.batch_size}",
            f"seed={c.prompts.seed}",
        ]
        if not c.init.enabled:  # no SFT: the "init" is the raw (derived) student, saved as is (last: these win)
            ov += ["optim.max_steps=1", "optim.lr=1e-12"]
        summary = self._train(ov)
        return {"model": str(d / "train" / "final"), "train": summary}

    def _trainer(self, method: str, seed: int) -> Callable[[Path], dict[str, Any]]:
        def run(d: Path) -> dict[str, Any]:
            t = self.cfg.train
            ov = self._common_train(d / "train", ground_truth=method == "sft")
            budget = t.token_budget
            points = [round(budget * i / t.curve_points) for i in range(1, t.curve_points)] if t.curve_points else []
            ov += [f"snapshot_tokens={points}"] if points else []
            ov += [
                f"method={method}",
                f"student.name={self.output('init')['model']}",
                f"seed={seed}",
                f"optim.lr={t.lr}",
                f"optim.batch_size={t.batch_size}",
                f"optim.warmup_steps={t.warmup_steps}",
                f"optim.grad_accum={t.grad_accum}",
                *(
                    [f"optim.max_tokens={t.token_budget}", "optim.epochs=100"]
                    if t.token_budget
                    else [f"optim.epochs={t.epochs}"]
                ),
                *t.overrides,
                *t.method_overrides.get(method, []),
            ]
            summary = self._train(ov)
            return {"model": str(d / "train" / "final"), "train": summary}

        return run

    def _evaluator(self, role: str, method: str | None, seed: int | None) -> Callable[[Path], dict[str, Any]]:
        def run(d: Path) -> dict[str, Any]:
            return self._evaluate(d, role, method, seed)

        return run

    def _evaluate(self, d: Path, role: str, method: str | None, seed: int | None) -> dict[str, Any]:
        from bench.fidelity import METRIC_INFO, fidelity, read_heldout, teacher_logprobs
        from distill.data import encode_example
        from distill.models import ModelConfig, load_from_config

        c = self.cfg
        tcfg = self._teacher_model()
        if role == "teacher":
            mcfg, label, path, train = tcfg, "Teacher", tcfg.name, None
        else:
            stage = "init" if role == "student-init" else f"train:{method}:s{seed}"
            out = self.output(stage)
            path, train = out["model"], out["train"]
            mcfg = ModelConfig(name=path, dtype=c.eval.dtype)
            init_label = "Student init (SFT)" if c.init.enabled else "Student init"
            label = init_label if role == "student-init" else METHOD_LABELS.get(method, method)
        metrics: dict[str, float] = {}
        info: dict[str, dict[str, Any]] = {}
        samples: dict[str, str] = {}
        if c.eval.fidelity:
            teacher, tok = load_from_config(tcfg)
            model, _ = (teacher, tok) if role == "teacher" else load_from_config(mcfg)
            held = read_heldout(Path(self.output("responses")["heldout"]))
            rows = [encode_example(tok, e, c.train.max_prompt_len, c.train.max_len) for e in held]
            from distill.models import aligned_vocab_size

            vocab = aligned_vocab_size(teacher, model, tok, tok)
            t_lp = teacher_logprobs(
                self.output("responses")["heldout"] + tcfg.name,
                teacher,
                rows,
                tok.pad_token_id,
                vocab,
                c.eval.batch_size,
            )
            fm, fs = fidelity(
                model,
                tok,
                held,
                t_lp,
                max_prompt_len=c.train.max_prompt_len,
                max_len=c.train.max_len,
                batch_size=c.eval.batch_size,
                max_new_tokens=c.eval.rouge_max_new_tokens,
            )
            metrics.update(fm)
            info.update(METRIC_INFO)
            atomic_write_jsonl(d / "fidelity_samples.jsonl", fs)
            samples["fidelity"] = str(d / "fidelity_samples.jsonl")
            del model, teacher
        versions: dict[str, Any] = {}
        curve: list[dict[str, Any]] | None = None
        if c.eval.tasks:
            rec = self._task_eval(d, mcfg.name, mcfg)
            task_metrics, task_info = _task_metrics(rec, c.eval.pipeline_checks, c.eval.not_averaged)
            metrics.update(task_metrics)
            info.update(task_info)
            for task, entry in rec["tasks"].items():
                versions[task] = entry.get("version")
                samples[task] = str(Path(rec["run_dir"]) / "samples" / f"{task}.jsonl")
            if c.train.curve_points and role != "teacher":
                curve = self._curve(d, role, train, mcfg, task_metrics)
        record = {
            "schema": RECORD_SCHEMA,
            "run_id": c.resolved_run_id,
            "suite": c.name,
            "suite_hash": c.hash,
            "model": {"role": role, "method": method, "seed": seed, "label": label, "path": path},
            "metrics": metrics,
            "metric_info": info,
            "task_versions": versions,
            "train": None
            if train is None
            else {
                "wall_s": train["wall_s"],
                "tokens": train["tokens"],
                "tokens_per_s": train["tokens_per_s"],
                "generation_s": train["generation_s"],
                "generation_share": train["generation_share"],
                "setup_generation_s": train.get("setup_generation_s", 0.0),
                "peak_rss_mib": train["peak_rss_mib"],
                "metrics": train["metrics"],
            },
            "provenance": _provenance(c),
            "samples": samples,
        }
        if curve is not None:
            record["curve"] = curve
        name = role if role != "method" else f"{method}-s{seed}"
        atomic_write_json(self.run_dir / "records" / f"{name}.json", record)
        return {"record": str(self.run_dir / "records" / f"{name}.json"), "metrics": metrics}

    def _curve(self, d: Path, role: str, train, mcfg, final: dict[str, float]) -> list[dict[str, Any]]:
        """Task metrics along training: the init at 0 tokens, every snapshot, then the final model. Points use
        ``eval.curve_tasks`` (tasks and limits; default: the full eval) and the final model is re-scored on them
        unless they equal the full eval."""
        c = self.cfg
        limits = dict(c.eval.curve_tasks or c.eval.tasks)
        same = limits == dict(c.eval.tasks)

        def point(path: str, name: str) -> dict[str, float]:
            rec = self._task_eval(d, path, mcfg, limits=limits, run_name=name)
            return _task_metrics(rec, c.eval.pipeline_checks, c.eval.not_averaged)[0]

        if role == "student-init":
            return [{"tokens": 0, "metrics": final if same else point(mcfg.name, "curve-0")}]
        points = []
        for snap in train.get("snapshots", []):
            points.append({"tokens": snap["tokens"], "metrics": point(snap["path"], f"curve-{snap['tokens']}")})
        points.append({"tokens": train["tokens"], "metrics": final if same else point(mcfg.name, "curve-final")})
        return points

    def eval_config(
        self,
        d: Path,
        name: str,
        cache_dir: str | None = None,
        limits: dict[str, int] | None = None,
        run_name: str = "tasks",
    ) -> Any:
        """The :class:`tasks.eval.EvalConfig` of model ``name``: every task of the suite in one lm-eval run."""
        from tasks.eval import EvalConfig

        c = self.cfg
        limits = dict(limits or c.eval.tasks)
        return EvalConfig(
            model=name,
            tasks=list(limits),
            limits=limits,
            dtype=c.eval.dtype,
            batch_size=c.eval.batch_size,
            protocol=c.eval.protocol,
            split=c.eval.split,
            max_new_tokens=c.eval.max_new_tokens,
            max_length=c.eval.max_length,
            backend=c.eval.backend,
            output_dir=str(d),
            run_name=run_name,
            cache_dir=cache_dir,
        )

    def _task_eval(
        self, d: Path, name: str, mcfg, limits: dict[str, int] | None = None, run_name: str = "tasks"
    ) -> dict[str, Any]:
        from tasks.eval import run_eval

        return run_eval(self.eval_config(d, name, mcfg.cache_dir, limits=limits, run_name=run_name), progress=False)


def _task_metrics(
    rec: dict[str, Any], pipeline_checks, not_averaged=()
) -> tuple[dict[str, float], dict[str, dict[str, Any]]]:
    """``task/metric`` values and their column info from an eval record. ``primary``: the task's primary metric,
    the one Avg. counts (none for a task in ``not_averaged``)."""
    metrics, info = {}, {}
    for task, entry in rec["tasks"].items():
        for metric, value in entry["scores"].items():
            if metric.endswith("_std") or metric.endswith("_stderr"):
                continue
            key = f"{task}/{metric}"
            metrics[key] = value
            info[key] = {
                "category": entry.get("category", "other"),
                "higher_is_better": True,
                "label": f"{task} {metric}",
                "pipeline_check": task in pipeline_checks,
                "primary": metric == entry.get("primary_metric", metric) and task not in not_averaged,
            }
    return metrics, info


def _provenance(cfg: SuiteConfig) -> dict[str, Any]:
    from tasks.eval import provenance

    return {**provenance(False), "suite_config": as_dict(cfg)}


def _threads_summary(fixed: int, max_threads: int, log: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """What the run did about CPU contention, for ``run_summary.json``."""
    if fixed:
        return {"mode": "fixed", "threads": fixed, "note": f"threads={fixed} set in the suite; no calibration"}
    single = sorted(name for name, c in log.items() if c["threads"] == 1 and max_threads > 1)
    note = (
        f"calibrated before each stage: {max_threads} threads throughout (no contention detected)"
        if not single
        else f"calibrated before each stage: {len(single)} of {len(log)} stages ran on 1 thread because "
        f"{max_threads}-thread torch was slower (another process held a core): {', '.join(single)}"
    )
    return {"mode": "auto", "max_threads": max_threads, "single_thread_stages": single, "note": note, "stages": log}


def _fault_hook(n_done: int) -> None:
    """Fault injection for tests: ``DISTILLM_FAULT_KILL_AFTER_STAGES=N`` SIGKILLs the run after N stages."""
    at = os.environ.get("DISTILLM_FAULT_KILL_AFTER_STAGES")
    if at is not None and int(at) == n_done:
        os.kill(os.getpid(), signal.SIGKILL)
