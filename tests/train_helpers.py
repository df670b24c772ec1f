"""Shared helpers for the trainer tests: a tiny prompt/response set and a briefly trained tiny teacher."""

from __future__ import annotations

from pathlib import Path

from distill.synthetic import write_synthetic_data


def write_train_data(path: Path, n: int = 48, seed: int = 0) -> Path:
    return write_synthetic_data(path, n, seed=seed)


def base_overrides(data: Path, teacher: str, out: Path) -> list[str]:
    return [
        f"data.train_file={data}",
        f"teacher.name={teacher}",
        f"student.name={teacher}",
        "student.prune_layers=2",
        f"output_dir={out}",
        "optim.batch_size=4",
        "optim.lr=2e-3",
        "teacher_sampling.max_new_tokens=10",
        "student_sampling.max_new_tokens=10",
        "student_sampling.temperature=1.0",
        "gen_batch_size=16",
        "resume=never",
    ]
