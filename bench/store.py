"""The shared stage store: every suite stage is stored once, by key, and run directories refer to it.

A stage's key is the hash of its resolved config and of its inputs' keys (``bench/run.py``), never of the suite as
a whole. So its outputs live in ``<output_root>/stages/<stage>-<key>/``, outside any one run directory, and
``<run>/stages/<stage>-<key>`` is a relative symlink to that entry. Any run whose stage has the same key reuses it:
fixing a suite typo, adding a method, or choosing a per-method learning rate that the sweep already trained costs
nothing for the stages it leaves alone.

* A stage is computed under an ``flock`` on ``<entry>.lock``: two runs that need the same stage at once compute it
  once (the second waits, then finds it done).
* A run directory written before the store existed holds its stages as real directories. ``adopt`` moves a finished
  one into the store, rewrites the paths its ``done.json`` records, and leaves the symlink in its place, so the old
  paths still resolve. Every run adopts all such directories under its output root first (``adopt_all``).
* ``gc`` removes the entries that no run directory under the root refers to (``distillm-bench gc``).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from distill.atomic import atomic_write_json

STORE_NAME = "stages"


def store_root(run_dir: Path) -> Path:
    """The store shared by every run directory under the same output root."""
    return Path(run_dir).parent / STORE_NAME


def link(run_dir: Path, entry: Path) -> None:
    """Make ``<run>/stages/<entry name>`` refer to the store ``entry`` (a relative symlink; idempotent)."""
    at = Path(run_dir) / STORE_NAME / entry.name
    at.parent.mkdir(parents=True, exist_ok=True)
    target = os.path.relpath(entry, at.parent)
    if at.is_symlink():
        if os.readlink(at) == target:
            return
        at.unlink()
    elif at.exists():  # a real directory: adopt() handles it
        return
    tmp = at.with_name(f".{at.name}.link-{os.getpid()}")
    tmp.unlink(missing_ok=True)
    tmp.symlink_to(target, target_is_directory=True)
    os.replace(tmp, at)  # atomic: a reader sees the old link or the new one


def _rewrite(obj: Any, old: list[str], new: str) -> Any:
    if isinstance(obj, str):
        for o in old:
            if obj == o or obj.startswith(o + os.sep):
                return new + obj[len(o) :]
        return obj
    if isinstance(obj, dict):
        return {k: _rewrite(v, old, new) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_rewrite(v, old, new) for v in obj]
    return obj


def adopt(run_dir: Path, entry: Path) -> bool:
    """Move a finished stage that lives in ``run_dir`` itself (written before the store) into the store entry.

    Returns whether it did. An unfinished one (no ``done.json``) is left alone: the store recomputes it. The paths in
    its ``done.json`` that point into the old directory are rewritten to the entry; the symlink left behind keeps any
    other copy of the old paths valid.
    """
    legacy = Path(run_dir) / STORE_NAME / entry.name
    if legacy.is_symlink() or not (legacy / "done.json").is_file() or entry.exists():
        return False
    entry.parent.mkdir(parents=True, exist_ok=True)
    os.rename(legacy, entry)  # same filesystem: atomic
    done = json.loads((entry / "done.json").read_text())
    old = [str(legacy), str(legacy.resolve(strict=False)), os.path.abspath(legacy)]
    atomic_write_json(entry / "done.json", _rewrite(done, old, str(entry)))
    link(run_dir, entry)
    return True


def adopt_all(root: Path) -> list[Path]:
    """Adopt the finished stages of every run directory under ``root`` written before the store (so that any suite
    reuses them at once); returns the new entries. Another process adopting the same one first is not an error."""
    adopted = []
    for links in sorted(Path(root).glob(f"*/{STORE_NAME}")):
        if links.parent.name == STORE_NAME:
            continue
        for legacy in sorted(p for p in links.iterdir() if p.is_dir() and not p.is_symlink()):
            try:
                if adopt(links.parent, Path(root) / STORE_NAME / legacy.name):
                    adopted.append(Path(root) / STORE_NAME / legacy.name)
            except FileNotFoundError:  # adopted by a concurrent run
                continue
    return adopted


@contextlib.contextmanager
def stage_lock(entry: Path) -> Iterator[None]:
    """Hold ``entry``'s compute lock for the block, waiting while another process computes the same stage."""
    path = entry.with_name(entry.name + ".lock")
    path.parent.mkdir(parents=True, exist_ok=True)
    fh = open(path, "a+")  # noqa: SIM115  (held open for the whole block: closing it releases the lock)
    try:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
        yield
    finally:
        fh.close()


@contextlib.contextmanager
def _try_lock(entry: Path) -> Iterator[bool]:
    """Take ``entry``'s compute lock without waiting; yields whether it was taken."""
    path = entry.with_name(entry.name + ".lock")
    with open(path, "a+") as fh:
        try:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        yield True


def referenced(root: Path) -> set[str]:
    """Names of the store entries that some run directory under ``root`` links to."""
    names: set[str] = set()
    for links in Path(root).glob(f"*/{STORE_NAME}"):
        if links.parent.name == STORE_NAME:
            continue
        for at in links.iterdir():
            if at.is_symlink():
                target = (at.parent / os.readlink(at)).resolve(strict=False)
                if target.parent == (Path(root) / STORE_NAME).resolve():
                    names.add(target.name)
    return names


def gc(root: Path, dry_run: bool = False) -> tuple[list[Path], int]:
    """Remove the store entries under ``root`` that no run directory refers to; returns (removed, bytes freed).

    An entry being computed right now (its lock held) is kept."""
    store = Path(root) / STORE_NAME
    if not store.is_dir():
        return [], 0
    keep = referenced(root)
    removed, freed = [], 0
    for entry in sorted(p for p in store.iterdir() if p.is_dir() and not p.is_symlink()):
        if entry.name in keep:
            continue
        with _try_lock(entry) as held:
            if not held:  # being computed right now
                continue
            freed += sum(f.stat().st_size for f in entry.rglob("*") if f.is_file() and not f.is_symlink())
            removed.append(entry)
            if not dry_run:
                shutil.rmtree(entry)  # under its lock; the lock file stays (unlinking it could race a waiter)
    return removed, freed
