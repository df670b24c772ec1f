"""``distillm-bench sweep``: per-method learning-rate selection on the validation split, as the papers tune.

DistiLLM (and DistiLLM-2 after it) picks each method's learning rate from a small grid by its validation score;
the held-out test split is never read. This module does the same for a suite:

* every grid value trains every method of the suite on one seed (the suite's first) with the suite's token budget;
* the trained models (and, with ``train.curve_points``, their snapshots) are scored on the tasks' **val** split,
  with fidelity off (it reads the held-out prompts);
* each method's learning rate is the grid value with the best validation Avg. (ties: the smaller rate);
* ``<output_root>/benchmarks/<suite>-sweep-<budget>k.{md,json}`` hold the grid, the choice and the validation learning
  curves, and the md gives the ``train.method_overrides`` lines to put in the suite. A rate set that way gives the
  same stage key as the sweep's run at that rate (a stage key hashes its real TrainConfig: bench/stage_config.py), so the suite reuses the
  sweep's training of its first seed.

Every variant shares one run directory (``<suite>-sweep``), so the teacher, prompts, responses and init stages
are computed once; each (method, rate) training stage is content-addressed like any other and is reused on rerun.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

from bench.record import Record
from bench.suite import SuiteConfig
from distill.atomic import atomic_write_json, atomic_write_text
from distill.config import ConfigError


def _without_lr(overrides: list[str]) -> list[str]:
    return [o for o in overrides if not o.replace(" ", "").startswith("optim.lr=")]


def sweep_variant(cfg: SuiteConfig, lr: float) -> SuiteConfig:
    """The suite at learning rate ``lr`` for every method, on its first seed, scored on the val split."""
    train = replace(
        cfg.train,
        lr=lr,
        overrides=_without_lr(cfg.train.overrides),
        method_overrides={m: _without_lr(v) for m, v in cfg.train.method_overrides.items()},
    )
    return replace(
        cfg,
        seeds=cfg.seeds[:1],
        train=train,
        eval=replace(cfg.eval, split="val", fidelity=False),
        run_id=f"{cfg.name}-sweep",
    )


def _avg(rec: Record, values: dict[str, Any] | None = None) -> float | None:
    """The record's Avg. (or that of ``values``, a curve point's metrics, under the record's metric definitions),
    with the leaderboard's own columns (its rule for what counts in the average)."""
    from bench.leaderboard import in_average, metric_columns

    keys = [c.key for c in metric_columns([rec]) if in_average(c)]
    got = [rec.value(k) for k in keys] if values is None else [values.get(k) for k in keys]
    vals = [float(v) for v in got if isinstance(v, (int, float))]
    return sum(vals) / len(vals) if vals else None


def _stage_avg(run, name: str) -> float | None:
    own = run.by_name(name).dir(run.run_dir) / "record.json"
    return _avg(Record.read(own)) if own.is_file() else None


def run_sweep(cfg: SuiteConfig, lrs: list[float], progress: bool = True) -> dict[str, Any]:
    """Train and score every (method, rate) of the grid; returns the sweep result (also written to disk)."""
    from bench.run import SuiteRun

    if not lrs:
        raise ConfigError("sweep: give at least one learning rate (--lr 1e-3,3e-3)")
    if len(set(lrs)) != len(lrs):
        raise ConfigError(f"sweep: duplicate learning rates in {lrs}")
    if not cfg.eval.tasks:
        raise ConfigError("sweep: the suite has no eval.tasks to score on the val split")
    if any(lr <= 0 for lr in lrs):
        raise ConfigError(f"sweep: learning rates must be > 0, got {lrs}")
    from tasks import TASKS

    no_val = sorted(t for t in cfg.eval.tasks if t not in TASKS or "val" not in TASKS[t].splits)
    if no_val:  # checked before any training: the sweep scores the val split only
        raise ConfigError(f"sweep: eval tasks without a val split cannot be tuned on: {', '.join(no_val)}")
    rows: list[dict[str, Any]] = []
    teacher: float | None = None
    init: float | None = None
    run_dir = None
    for lr in sorted(lrs):
        variant = sweep_variant(cfg, lr)
        run = SuiteRun(variant)
        run_dir = run.run_dir
        run.run(progress=progress, until=run.stages[-1].name)
        seed = variant.seeds[0]
        teacher = teacher if teacher is not None else _stage_avg(run, "eval:teacher")  # each stage's own record
        init = init if init is not None else _stage_avg(run, "eval:init")
        for method in variant.methods:
            stage = run.by_name(f"eval:{method}:s{seed}")
            own = stage.dir(run.run_dir) / "record.json"
            if not own.is_file():  # written before stages kept their own record: records/ may hold another rate's
                raise ConfigError(
                    f"sweep: {stage.dir(run.run_dir)} has no record.json (an older version wrote it); delete that "
                    "directory and rerun the sweep"
                )
            rec = Record.read(own)
            rows.append(
                {
                    "method": method,
                    "lr": lr,
                    "seed": seed,
                    "val_avg": _avg(rec),
                    "metrics": {k: m.value for k, m in rec.metrics.items()},
                    "curve": [{"tokens": p["tokens"], "avg": _avg(rec, p["metrics"])} for p in rec.curve or ()],
                    "tokens_per_s": None if rec.train is None else rec.train.tokens_per_s,
                }
            )
    chosen = {}
    for method in cfg.methods:
        cands = [r for r in rows if r["method"] == method and r["val_avg"] is not None]
        if cands:  # best val Avg.; ties go to the smaller rate (sorted ascending, max keeps the first)
            chosen[method] = max(cands, key=lambda r: r["val_avg"])["lr"]
    result = {
        "suite": cfg.name,
        "suite_hash": cfg.hash,
        "grid": sorted(lrs),
        "seed": cfg.seeds[0],
        "token_budget": cfg.train.token_budget,
        "batch_size": cfg.train.batch_size,
        "split": "val",
        "teacher_val_avg": teacher,
        "init_val_avg": init,
        "rows": rows,
        "chosen": chosen,
        "run_dir": str(run_dir),
    }
    root = Path(cfg.output_root) / "benchmarks"
    stem = sweep_stem(cfg)
    md, js = root / f"{stem}.md", root / f"{stem}.json"
    atomic_write_text(md, render_sweep(result))
    atomic_write_json(js, result)
    result["outputs"] = [str(md), str(js)]
    return result


def sweep_stem(cfg: SuiteConfig) -> str:
    """``<suite>-sweep-<budget>k``: one report per token budget (a sweep at another budget does not overwrite)."""
    budget = f"{cfg.train.token_budget / 1000:g}k" if cfg.train.token_budget else f"{cfg.train.epochs}ep"
    return f"{cfg.name}-sweep-{budget}"


def render_sweep(result: dict[str, Any]) -> str:
    from bench.render import _md_table, fmt_num

    grid, methods = result["grid"], list(dict.fromkeys(r["method"] for r in result["rows"]))  # every method run
    by = {(r["method"], r["lr"]): r for r in result["rows"]}
    from distill.methods import method_label

    choice = len(grid) > 1  # one rate is a measurement at that rate, not a choice

    def cell(m: str, lr: float) -> str:
        v = by.get((m, lr), {}).get("val_avg")
        text = "–" if v is None else fmt_num(v)
        return f"**{text}**" if choice and result["chosen"].get(m) == lr else text

    def picked(m: str) -> list[str]:
        return [f"{result['chosen'][m]:g}" if m in result["chosen"] else "–"] if choice else []

    header = ["Method", *[f"lr {lr:g}" for lr in grid], *(["chosen"] if choice else [])]
    body = [[method_label(m), *[cell(m, lr) for lr in grid], *picked(m)] for m in methods]
    lines = [
        f"**Learning-rate sweep on the val split**: suite `{result['suite']}` (hash `{result['suite_hash'][:16]}`), "
        f"seed {result['seed']}, {result['token_budget']} tokens per run, batch {result.get('batch_size')}",
        "",
        _md_table(header, body),
        "",
        "- Cells: validation Avg. (the mean of the primary task metrics on each task's val split; the held-out test "
        "split is never read). "
        + (
            "Bold: the chosen rate, the best validation Avg. (ties: the smaller rate)."
            if choice
            else "One rate only: this measures it; no rate was chosen."
        ),
    ]
    for who in ("teacher", "init"):
        if result.get(f"{who}_val_avg") is not None:
            lines.append(f"- The {who} on the same val split: {fmt_num(result[f'{who}_val_avg'])}.")
    curves = [r for r in result["rows"] if r["curve"]]
    if curves:
        # a point's column: its place along the budget (snapshots land a few tokens past budget * i / points)
        budget, points = result["token_budget"], max(len(r["curve"]) for r in curves)

        def col(tokens: float) -> int:
            return round(tokens * points / budget)

        cols = sorted({col(p["tokens"]) for r in curves for p in r["curve"]})
        lines += ["", "**Validation Avg. along training** (tokens trained; a run's point nearest to each)", ""]
        head = ["Method", "lr", *[f"{budget * i / points / 1000:.0f}k" for i in cols]]
        rows = []
        for r in curves:
            at = {col(p["tokens"]): p["avg"] for p in r["curve"]}
            rows.append(
                [
                    method_label(r["method"]),
                    f"{r['lr']:g}",
                    *["–" if at.get(i) is None else fmt_num(at[i]) for i in cols],
                ]
            )
        lines += [_md_table(head, rows)]
    chosen = result["chosen"]
    if chosen and choice:
        lines += [
            "",
            "Suite lines for the chosen rates:",
            "",
            "```yaml",
            "  method_overrides:",
            *[f"    {m}: [optim.lr={lr:g}]" for m, lr in chosen.items()],
            "```",
        ]
    return "\n".join(lines) + "\n"
