"""The suite's record (``<run>/records/<name>.json``, schema :data:`SCHEMA`): its schema name, its error, and the
training cost it carries, typed.

A record is written by the eval stage (``bench/run_eval.py``) and read by the leaderboard, the cost and throughput
tables and the sweep. The training cost used to travel as a dict read by string keys in four places, where a
renamed key silently showed "–"; it is a :class:`TrainCost` now, built from the trainer's summary when the record
is written and validated when it is read, so a missing or non-numeric field is an error naming the record and the
field.
"""

from __future__ import annotations

import math
from dataclasses import MISSING, asdict, dataclass, fields
from typing import Any

SCHEMA = "distillm-bench/record/v1"


class RecordError(ValueError):
    """Records that cannot be tabulated (unreadable, malformed, inconsistent, duplicated): one line naming the
    record(s) and the field; CLI exit status 2."""


def record_name(rec: dict[str, Any]) -> str:
    """The record's file where it was read from one, else role/method/seed."""
    if "_source" in rec:
        return str(rec["_source"])
    model = rec.get("model") or {}
    return f"{model.get('role')}/{model.get('method')}/seed={model.get('seed')}"


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
    def from_summary(cls, summary: dict[str, Any]) -> TrainCost:
        """From a suite training stage's summary (the trainer's, plus ``peak_rss_mib`` and ``metrics``)."""
        return cls.from_dict(summary, "the training summary")

    @classmethod
    def from_record(cls, rec: dict[str, Any]) -> TrainCost | None:
        """The record's cost, validated (None for the teacher and the init, which were not trained by a method)."""
        train = rec.get("train")
        return None if train is None else cls.from_dict(train, f"record {record_name(rec)}")

    @classmethod
    def from_dict(cls, d: dict[str, Any], where: str) -> TrainCost:
        if not isinstance(d, dict):
            raise RecordError(f"{where}: train is {type(d).__name__}, not an object")
        values = {}
        for f in fields(cls):
            value = d.get(f.name)
            optional = f.default is not MISSING
            if value is None:
                if not optional:
                    raise RecordError(f"{where}: train.{f.name} is missing")
                values[f.name] = f.default
                continue
            if f.name == "metrics":
                values[f.name] = str(value)
                continue
            if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
                raise RecordError(f"{where}: train.{f.name} = {value!r} is not a finite number")
            values[f.name] = int(value) if f.name == "tokens" else float(value)
        return cls(**values)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)
