"""One run at a time per run directory: a lock file holding the owner's pid.

A second ``run`` on the same directory refuses in one line naming the holder. A lock whose process is gone (a
killed run) is stale and is taken over. The lock file is created with ``O_EXCL``, so two processes racing for a
free directory cannot both win.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

LOCK_NAME = ".lock"


class RunLockedError(ValueError):
    """Another live process holds the run directory."""


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by another user
        return True
    return True


def _holder(path: Path) -> int | None:
    try:
        return int(path.read_text().strip() or 0) or None
    except (OSError, ValueError):
        return None


@contextlib.contextmanager
def run_lock(run_dir: Path) -> Iterator[Path]:
    """Hold ``run_dir``'s lock for the block (taking over a stale one); raises :class:`RunLockedError`."""
    path = Path(run_dir) / LOCK_NAME
    path.parent.mkdir(parents=True, exist_ok=True)
    for _ in range(2):
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            pid = _holder(path)
            if pid is not None and pid != os.getpid() and _alive(pid):
                raise RunLockedError(
                    f"{run_dir} is in use by another run (pid {pid}); wait for it to finish, or remove {path} "
                    "if that process is not a distillm-bench run"
                ) from None
            path.unlink(missing_ok=True)  # stale (its process is gone) or ours: take it over
            continue
        with os.fdopen(fd, "w") as fh:
            fh.write(f"{os.getpid()}\n")
        break
    else:
        raise RunLockedError(f"{run_dir}: could not take the lock {path}")
    try:
        yield path
    finally:
        if _holder(path) == os.getpid():
            path.unlink(missing_ok=True)
