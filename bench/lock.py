"""One run at a time per run directory: an advisory lock (``flock``) on ``<run_dir>/.lock``, which holds the
owner's pid for the error message.

A second ``run`` on the same directory refuses in one line naming the holder. The kernel releases the lock when
its process ends, however it ends, so a killed run leaves no stale lock to clean up: the next run simply takes it.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import sys
from collections.abc import Iterator
from pathlib import Path

LOCK_NAME = ".lock"


class RunLockedError(ValueError):
    """Another live process holds the run directory."""


@contextlib.contextmanager
def run_lock(run_dir: Path, wait: bool = False) -> Iterator[Path]:
    """Hold ``run_dir``'s lock for the block; raises :class:`RunLockedError` while another process holds it (or,
    with ``wait``, says so on stderr and waits for it)."""
    path = Path(run_dir) / LOCK_NAME
    path.parent.mkdir(parents=True, exist_ok=True)
    fh = open(path, "a+")  # noqa: SIM115  (held open for the whole block: closing it releases the lock)
    try:
        try:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            fh.seek(0)
            holder = fh.read().strip() or "unknown"
            if wait:
                print(f"{run_dir} is in use by another run (pid {holder}); waiting for it", file=sys.stderr)
                fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
            else:
                raise RunLockedError(
                    f"{run_dir} is in use by another run (pid {holder}); wait for it to finish (--wait), or run "
                    "elsewhere"
                ) from None
        fh.seek(0)
        fh.truncate()
        fh.write(f"{os.getpid()}\n")
        fh.flush()
        yield path
    finally:
        fh.close()  # releases the lock (the file stays: deleting it could race a waiting process)
