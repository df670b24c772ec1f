"""The suite's evaluation stage (``eval:<model>``): a model's fidelity to the teacher, its task scores through the
eval engine, its learning curve, and its record (``<run>/records/<name>.json``; its schema and typed training cost:
``bench/record.py``)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bench.record import SCHEMA, TrainCost
from bench.suite import SuiteConfig, as_dict
from distill.atomic import atomic_write_json, atomic_write_jsonl
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
    metrics: dict[str, float] = {}
    info: dict[str, dict[str, Any]] = {}
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
        metrics.update(fm)
        info.update(METRIC_INFO)
        atomic_write_jsonl(d / "fidelity_samples.jsonl", fs)
        samples["fidelity"] = str(d / "fidelity_samples.jsonl")
        del model, teacher
    versions: dict[str, Any] = {}
    curve: list[dict[str, Any]] | None = None
    if c.eval.tasks:
        rec = task_eval(run, d, mcfg.name, mcfg)
        task_metrics, task_info = task_metrics_of(rec, c.eval.pipeline_checks, c.eval.not_averaged)
        metrics.update(task_metrics)
        info.update(task_info)
        for task, entry in rec["tasks"].items():
            versions[task] = entry.get("version")
            samples[task] = str(Path(rec["run_dir"]) / "samples" / f"{task}.jsonl")
        if c.train.curve_points and role != "teacher":
            curve = learning_curve(run, d, role, train, mcfg, task_metrics)
    record = {
        "schema": SCHEMA,
        "run_id": c.resolved_run_id,
        "suite": c.name,
        "suite_hash": c.hash,
        "model": {"role": role, "method": method, "seed": seed, "label": label, "path": path},
        "metrics": metrics,
        "metric_info": info,
        "task_versions": versions,
        "train": None if train is None else TrainCost.from_summary(train).as_dict(),
        "provenance": run_provenance(c),
        "samples": samples,
    }
    if curve is not None:
        record["curve"] = curve
    name = role if role != "method" else f"{method}-s{seed}"
    atomic_write_json(run.run_dir / "records" / f"{name}.json", record)
    # the stage's own copy: records/ holds the latest run of each model name, which a sweep's next grid point
    # (same names, other stages) overwrites
    atomic_write_json(d / "record.json", record)
    return {"record": str(run.run_dir / "records" / f"{name}.json"), "metrics": metrics}


def learning_curve(run: SuiteRun, d: Path, role: str, train, mcfg, final: dict[str, float]) -> list[dict[str, Any]]:
    """Task metrics along training: the init at 0 tokens, every snapshot, then the final model. Points use
    ``eval.curve_tasks`` (tasks and limits; default: the full eval) and the final model is re-scored on them
    unless they equal the full eval."""
    c = run.cfg
    limits = dict(c.eval.curve_tasks or c.eval.tasks)
    same = limits == dict(c.eval.tasks)

    def point(path: str, name: str) -> dict[str, float]:
        rec = task_eval(run, d, path, mcfg, limits=limits, run_name=name)
        return task_metrics_of(rec, c.eval.pipeline_checks, c.eval.not_averaged)[0]

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
) -> dict[str, Any]:
    from bench.evaluate import run_eval

    return run_eval(eval_config(run, d, name, mcfg.cache_dir, limits=limits, run_name=run_name), progress=False)


def task_metrics_of(
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
                "higher_is_better": entry.get("higher_is_better", {}).get(metric, True),  # the task's own say
                "label": f"{task} {metric}",
                "pipeline_check": task in pipeline_checks,
                "primary": metric == entry.get("primary_metric", metric) and task not in not_averaged,
            }
    return metrics, info


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
    rec, c = json.loads(own.read_text()), run.cfg
    if rec.get("suite_hash") != c.hash:
        rec["computed_for"] = rec.get("computed_for") or rec.get("run_id")
        rec |= {"run_id": c.resolved_run_id, "suite": c.name, "suite_hash": c.hash}
        rec["provenance"] = {**rec.get("provenance", {}), "suite_config": as_dict(c)}
    atomic_write_json(run.run_dir / "records" / Path(done["record"]).name, rec)


def run_provenance(cfg: SuiteConfig) -> dict[str, Any]:
    from bench.evaluate import provenance

    return {**provenance(False), "suite_config": as_dict(cfg)}
