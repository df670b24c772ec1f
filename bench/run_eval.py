"""The suite's evaluation stage (``eval:<model>``): a model's fidelity to the teacher, its task scores through the
eval engine, its learning curve, and its record (``<run>/records/<name>.json``; its schema and typed training cost:
``bench/record.py``)."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bench.record import Metric, ModelRef, Record, TaskRecord, TrainCost
from bench.suite import SuiteConfig, as_dict
from distill.atomic import atomic_write_jsonl
from distill.methods import method_label

if TYPE_CHECKING:
    from bench.run import SuiteRun


def evaluate_model(run: SuiteRun, d: Path, role: str, method: str | None, seed: int | None) -> dict[str, Any]:
    """The ``eval:<model>`` stage: fidelity to the teacher on held-out prompts, the suite's tasks and (for a
    student with ``train.curve_points``) its learning curve; writes the record."""
    from bench.fidelity import METRIC_INFO, fidelity, read_heldout, teacher_logprobs
    from distill.data import encode_example
    from distill.models import ModelConfig, load_for_inference

    c = run.cfg
    tcfg = run._teacher_model()
    if role == "teacher":
        mcfg, label, path, train = tcfg, "Teacher", tcfg.name, None
    else:
        stage = "init" if role == "student-init" else f"train:{method}:s{seed}"
        out = run.output(stage)
        path, train = out["model"], out["train"]
        mcfg = ModelConfig(name=path, dtype=c.eval.dtype)
        init_label = "Student init (SFT)" if c.init.enabled else "Student init"
        label = init_label if role == "student-init" else method_label(method)
    metrics: dict[str, Metric] = {}
    tasks: dict[str, TaskRecord] = {}
    samples: dict[str, str] = {}
    if c.eval.fidelity:
        teacher, tok = load_for_inference(tcfg)
        model, _ = (teacher, tok) if role == "teacher" else load_for_inference(mcfg)
        held = read_heldout(Path(run.output("responses")["heldout"]))
        rows = [encode_example(tok, e, c.train.max_prompt_len, c.train.max_len) for e in held]
        from distill.models import aligned_vocab_size

        vocab = aligned_vocab_size(teacher, model, tok, tok)
        t_lp = teacher_logprobs(
            run.output("responses")["heldout"] + tcfg.name,
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
        metrics |= {k: Metric(value=v, **METRIC_INFO[k]) for k, v in fm.items()}
        atomic_write_jsonl(d / "fidelity_samples.jsonl", fs)
        samples["fidelity"] = str(d / "fidelity_samples.jsonl")
        del model, teacher
    curve: list[dict[str, Any]] | None = None
    if c.eval.tasks:
        rec = task_eval(run, d, mcfg.name, mcfg)
        task_metrics = suite_metrics(rec, c.eval.pipeline_checks, c.eval.not_averaged)
        metrics |= task_metrics
        tasks = dict(rec.tasks)
        samples |= rec.samples
        if c.train.curve_points and role != "teacher":
            curve = learning_curve(run, d, role, train, mcfg, {k: m.value for k, m in task_metrics.items()})
    record = Record(
        run_id=c.resolved_run_id,
        suite=c.name,
        suite_hash=c.hash,
        model=ModelRef(role=role, method=method, seed=seed, label=label, path=path),
        metrics=metrics,
        tasks=tasks,
        train=None if train is None else TrainCost.from_summary(train),
        provenance=run_provenance(c),
        samples=samples,
        curve=None if curve is None else tuple(curve),
    )
    name = role if role != "method" else f"{method}-s{seed}"
    record.write(run.run_dir / "records" / f"{name}.json")
    # the stage's own copy: records/ holds the latest run of each model name, which a sweep's next grid point
    # (same names, other stages) overwrites
    record.write(d / "record.json")
    return {
        "record": str(run.run_dir / "records" / f"{name}.json"),
        "metrics": {k: m.value for k, m in metrics.items()},
    }


def learning_curve(run: SuiteRun, d: Path, role: str, train, mcfg, final: dict[str, float]) -> list[dict[str, Any]]:
    """Task metrics along training: the init at 0 tokens, every snapshot, then the final model. Points use
    ``eval.curve_tasks`` (tasks and limits; default: the full eval) and the final model is re-scored on them
    unless they equal the full eval."""
    c = run.cfg
    limits = dict(c.eval.curve_tasks or c.eval.tasks)
    same = limits == dict(c.eval.tasks)

    def point(path: str, name: str) -> dict[str, float | None]:
        rec = task_eval(run, d, path, mcfg, limits=limits, run_name=name)
        return {k: m.value for k, m in rec.metrics.items()}

    if role == "student-init":
        return [{"tokens": 0, "metrics": final if same else point(mcfg.name, "curve-0")}]
    points = []
    for snap in train.get("snapshots", []):
        points.append({"tokens": snap["tokens"], "metrics": point(snap["path"], f"curve-{snap['tokens']}")})
    points.append({"tokens": train["tokens"], "metrics": final if same else point(mcfg.name, "curve-final")})
    return points


def eval_config(
    run: SuiteRun,
    d: Path,
    name: str,
    cache_dir: str | None = None,
    limits: dict[str, int] | None = None,
    run_name: str = "tasks",
) -> Any:
    """The :class:`bench.evaluate.EvalConfig` of model ``name``: every task of the suite in one lm-eval run."""
    from bench.evaluate import EvalConfig

    c = run.cfg
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
        data_files=[f"{task}={path}" for task, path in c.eval.data_files.items() if task in limits],
        output_dir=str(d),
        run_name=run_name,
        cache_dir=cache_dir,
    )


def task_eval(
    run: SuiteRun, d: Path, name: str, mcfg, limits: dict[str, int] | None = None, run_name: str = "tasks"
) -> Record:
    from bench.evaluate import run_eval

    return run_eval(eval_config(run, d, name, mcfg.cache_dir, limits=limits, run_name=run_name), progress=False)


def suite_metrics(rec: Record, pipeline_checks, not_averaged=()) -> dict[str, Metric]:
    """The eval engine's task metrics as the suite counts them: a task in ``eval.pipeline_checks`` is a pipeline
    check, and one in ``eval.not_averaged`` is shown but not counted in Avg."""
    out = {}
    for key, m in rec.metrics.items():
        task = key.rpartition("/")[0]
        out[key] = replace(m, pipeline_check=task in pipeline_checks, primary=m.primary and task not in not_averaged)
    return out


def attach_record(run: SuiteRun, stage: str, d: Path) -> None:
    """A cached eval stage, perhaps computed for another run (the shared store): its record, as this run's, under
    ``<run>/records/``. The metrics are the stage's; the run fields are this run's, and ``computed_for`` names the
    run that computed it."""
    own = d / "record.json"
    if not stage.startswith("eval:") or not own.is_file():
        return
    done = json.loads((d / "done.json").read_text())
    if "record" not in done:
        return
    rec, c = Record.read(own), run.cfg
    if rec.suite_hash != c.hash:
        rec = replace(
            rec,
            computed_for=rec.computed_for or rec.run_id,
            run_id=c.resolved_run_id,
            suite=c.name,
            suite_hash=c.hash,
            provenance={**rec.provenance, "suite_config": as_dict(c)},
        )
    rec.write(run.run_dir / "records" / Path(done["record"]).name)


def run_provenance(cfg: SuiteConfig) -> dict[str, Any]:
    from bench.evaluate import provenance

    return {**provenance(False), "suite_config": as_dict(cfg)}
