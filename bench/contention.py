"""CPU contention: pick torch's thread count from a short calibration before each stage.

On a 2-core machine, two-thread torch collapses (up to 17x slower, ``shared/docs/world-sizing.md``) when another
process keeps one core busy, while one thread barely slows. Before each stage the suite times a small workload shaped
like the world's training steps (a [2560, 128] x [128, 256] matmul with its backward-sized partner) at the machine's
thread count and at one thread, and runs the stage with the faster. The choices land in ``run_summary.json``.
Also here: :class:`PeakRSS`, the peak resident memory of a block (the cost table's memory column).
"""

from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch


@dataclass(frozen=True)
class ThreadChoice:
    threads: int
    seconds_multi: float
    seconds_single: float
    contended: bool

    def as_dict(self) -> dict[str, float | int | bool]:
        return {
            "threads": self.threads,
            "ms_multi": round(self.seconds_multi * 1e3, 2),
            "ms_single": round(self.seconds_single * 1e3, 2),
            "contended": self.contended,
        }


def _time(threads: int, reps: int = 6) -> float:
    torch.set_num_threads(threads)
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(2560, 128, generator=g), torch.randn(128, 256, generator=g)
    (a @ b).sum()  # warm up
    best = float("inf")
    for _ in range(2):
        t0 = time.perf_counter()
        for _ in range(reps):
            c = a @ b
            (c @ b.T).sum()
        best = min(best, time.perf_counter() - t0)
    return best


def choose_threads(max_threads: int | None = None) -> ThreadChoice:
    """Time the workload at ``max_threads`` (default: the cores torch may use) and at 1; keep the faster.

    Multi-threading must win by 10% to be kept: when the other core is busy it loses by far more than that."""
    n = max_threads or min(torch.get_num_threads(), os.cpu_count() or 1) or 1
    if n <= 1:
        torch.set_num_threads(1)
        return ThreadChoice(1, 0.0, 0.0, False)
    multi, single = _time(n), _time(1)
    if multi >= 0.9 * single:  # confirm after a pause: a blip (a process exiting) must not cost a whole stage
        time.sleep(0.5)
        multi, single = min(multi, _time(n)), min(single, _time(1))
    threads = n if multi < 0.9 * single else 1
    torch.set_num_threads(threads)
    return ThreadChoice(threads, multi, single, contended=multi > single)


class PeakRSS:
    """Peak resident memory of this process while a block runs (sampled from /proc every 0.2 s)."""

    def __enter__(self) -> PeakRSS:
        self.peak, self._stop = rss_mib(), threading.Event()
        self._t = threading.Thread(target=self._watch, daemon=True)
        self._t.start()
        return self

    def _watch(self) -> None:
        while not self._stop.wait(0.2):
            self.peak = max(self.peak, rss_mib())

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._t.join()
        self.peak = max(self.peak, rss_mib())


def rss_mib() -> float:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def threads_summary(fixed: int, max_threads: int, log: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """What the run did about CPU contention, for ``run_summary.json``."""
    if fixed:
        return {"mode": "fixed", "threads": fixed, "note": f"threads={fixed} set in the suite; no calibration"}
    single = sorted(name for name, c in log.items() if c["threads"] == 1 and max_threads > 1)
    note = (
        f"calibrated before each stage: {max_threads} threads throughout (no contention detected)"
        if not single
        else f"calibrated before each stage: {len(single)} of {len(log)} stages ran on 1 thread because "
        f"{max_threads}-thread torch was slower (another process held a core): {', '.join(single)}"
    )
    return {"mode": "auto", "max_threads": max_threads, "single_thread_stages": single, "note": note, "stages": log}
