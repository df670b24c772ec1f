"""Run untrusted Python (model-written code plus its tests) in a contained child process.

Every program gets:

* its own session and process group (``start_new_session``); on timeout, on exit or when it floods its output,
  the whole group is SIGKILLed;
* a wall-clock timeout enforced by the parent, plus ``RLIMIT_CPU`` as a backstop;
* ``RLIMIT_AS`` (memory), ``RLIMIT_FSIZE`` (file size), ``RLIMIT_NOFILE``, ``RLIMIT_CORE=0``;
* a private temporary working directory, deleted afterwards;
* stdout+stderr through one pipe, capped (``Limits.output_bytes``);
* new namespaces: network (only a down loopback: every connect fails), mount (empty tmpfs over ``/tmp``,
  ``/var/tmp``, ``/dev/shm``; a fresh ``/proc``) and pid: the program is pid 1 of its own pid namespace, so it
  cannot address the scorer (``getppid() == 0``), and when it exits, or the driver dies (``PR_SET_PDEATHSIG``),
  the kernel kills everything it left behind;
* a process-count limit (``RLIMIT_NPROC``, against fork bombs).

``RLIMIT_NPROC`` does nothing for root, so when the scorer runs as root (CI containers, this machine) the program
drops to a fresh random uid/gid with no supplementary groups after the namespaces are set up: the limit then counts
only that program's processes, it cannot write or delete files it does not own (the repo, a canary) and cannot
signal the scorer; every process of that uid is killed after the run. The interpreter (under ``/root`` here) is
unreadable by that uid, so the stdlib modules a program names in its import statements are imported before the
drop; any other import fails (the program does not pass). Programs run with ``python -I -S`` (stdlib only).

As a non-root user the driver unshares a user namespace too (mapping only its own uid), which the kernel needs
for the other namespaces; ``RLIMIT_NPROC`` is then the user's current process count plus the limit. Fallback:
if the kernel refuses the namespaces, the program runs without network/mount/pid isolation (reported by
:func:`isolation`); pass ``require_isolation=True`` to refuse instead.

A program passes only if it *finished*: after it returns, the driver writes a random nonce, and ``passed``
needs the nonce plus exit status 0. ``sys.exit(0)`` / ``os._exit(0)`` before the asserts therefore fail. The nonce
is read from stdin inside the driver and is never in the program text or in ``__main__``; code that deliberately
walks the interpreter's frames for it is outside this threat model, as is reading world-readable files.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import selectors
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import lru_cache
from typing import Literal

Status = Literal["passed", "failed", "timeout", "output_limit", "no_sentinel", "sandbox_error"]

# Imported before privileges are dropped (the stdlib is unreadable afterwards when it lives under /root): the
# stdlib modules a program names in its import statements, plus modules the stdlib imports lazily at call time.
ALWAYS_PREIMPORT = ("_strptime", "encodings.idna", "typing", "collections.abc")
_IMPORT_RE = re.compile(r"^\s*(?:from\s+([\w.]+)\s+import|import\s+([\w., \t]+))", re.MULTILINE)


def preimports(source: str) -> list[str]:
    """Stdlib modules ``source`` imports (by its import statements), plus :data:`ALWAYS_PREIMPORT`."""
    names: list[str] = list(ALWAYS_PREIMPORT)
    for from_name, import_list in _IMPORT_RE.findall(source):
        for item in [from_name] if from_name else import_list.split(","):
            name = item.strip().split(" ")[0]
            if name and name.split(".")[0] in sys.stdlib_module_names and name not in names:
                names.append(name)
    return names


# The child: runs as the first code of a fresh `python -I -S` and ends by exec'ing the program in-process.
_DRIVER = r"""
import ctypes, json, os, resource, sys, types
cfg = json.loads(sys.argv[1])
libc = ctypes.CDLL(None, use_errno=True)
NEWNS, NEWUSER, NEWNET = 0x00020000, 0x10000000, 0x40000000
MS_NOSUID, MS_NODEV, MS_REC, MS_PRIVATE = 2, 4, 16384, 1 << 18
NEWPID, MS_NOEXEC, PR_SET_PDEATHSIG = 0x20000000, 8, 1
root = os.geteuid() == 0
outer_uid, outer_gid = os.getuid(), os.getgid()
isolated = libc.unshare(NEWNET | NEWNS | NEWPID | (0 if root else NEWUSER)) == 0
if isolated and not root:  # map our own uid/gid into the new user namespace, so files can still be created
    for path, text in (("setgroups", "deny"), ("uid_map", f"{outer_uid} {outer_uid} 1"), ("gid_map", f"{outer_gid} {outer_gid} 1")):
        with open(f"/proc/self/{path}", "w") as fh:
            fh.write(text)
# Never touch mounts unless this process is really in a new mount namespace (else it would change the host's).
isolated = isolated and os.readlink("/proc/self/ns/mnt") != cfg["parent_mnt_ns"]
if isolated:
    libc.mount(None, b"/", None, MS_REC | MS_PRIVATE, None)
    for d in (b"/tmp", b"/var/tmp", b"/dev/shm"):
        if os.path.isdir(d):
            libc.mount(b"tmpfs", d, b"tmpfs", MS_NOSUID | MS_NODEV, b"size=16m,mode=1777")
if cfg["require_isolation"] and not isolated:
    os.write(2, b"sandbox: cannot unshare network/mount/pid namespaces\n")
    os._exit(97)
for name in cfg["preimport"]:
    try:
        __import__(name)
    except Exception:
        pass
if isolated:
    # The program runs as pid 1 of a new pid namespace: it cannot address the scorer (getppid() == 0), and
    # when it exits or this driver dies (PDEATHSIG) the kernel kills everything left in the namespace.
    child = os.fork()
    if child:
        _, status = os.waitpid(child, 0)
        code = os.waitstatus_to_exitcode(status)
        os._exit(code if code >= 0 else 128 - code)
    libc.prctl(PR_SET_PDEATHSIG, 9)
    libc.mount(b"proc", b"/proc", b"proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, None)
def lim(res, value):
    resource.setrlimit(res, (value, value))
lim(resource.RLIMIT_AS, cfg["memory_bytes"])
lim(resource.RLIMIT_CPU, cfg["cpu_s"])
lim(resource.RLIMIT_FSIZE, cfg["file_bytes"])
lim(resource.RLIMIT_NOFILE, cfg["open_files"])
lim(resource.RLIMIT_CORE, 0)
if root:
    try:
        os.setgroups([])
        os.setgid(cfg["uid"])
        os.setuid(cfg["uid"])
    except OSError as err:
        os.write(2, f"sandbox: cannot drop privileges: {err}\n".encode())
        os._exit(97)
    nproc = cfg["processes"]
else:
    nproc = cfg["processes"] + cfg["user_processes"]
lim(resource.RLIMIT_NPROC, nproc)
if cfg["report"]:
    print(json.dumps({"uid": os.getuid(), "net_mount_pid_ns": isolated, "nproc": resource.getrlimit(resource.RLIMIT_NPROC)[0]}))
def _run():
    # The nonce is read here, not kept in a module global: the program gets a fresh __main__ module.
    nonce = sys.stdin.readline().strip()
    sys.stdin.close()
    sys.stdin = open(os.devnull)
    with open("prog.py", encoding="utf-8") as fh:
        code = compile(fh.read(), "prog.py", "exec")
    main = types.ModuleType("__main__")
    main.__builtins__ = __builtins__
    sys.modules["__main__"] = main
    exec(code, main.__dict__)
    sys.stdout.flush()
    sys.stderr.flush()
    os.write(1, ("\n" + nonce + "\n").encode())
del cfg, libc, lim, root, isolated, nproc
_run()
"""


class SandboxError(RuntimeError):
    """The sandbox itself could not run a program (so a failure would not be the program's fault)."""


@dataclass(frozen=True)
class Limits:
    timeout_s: float = 3.0
    memory_bytes: int = 1 << 30
    processes: int = 16
    output_bytes: int = 64 * 1024
    file_bytes: int = 16 * 1024 * 1024
    open_files: int = 64


@dataclass(frozen=True)
class RunResult:
    status: Status
    returncode: int | None
    output: str
    duration_s: float

    @property
    def passed(self) -> bool:
        return self.status == "passed"


def _pids_of_uid(uid: int) -> list[int]:
    """Live (non-zombie) pids whose real uid is ``uid``, read from /proc/<pid>/status (/proc/<pid> itself is
    root-owned once a process has changed uid and become non-dumpable)."""
    pids = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/status", encoding="ascii", errors="replace") as fh:
                fields = dict(line.split(":", 1) for line in fh if ":" in line)
            if int(fields["Uid"].split()[0]) == uid and not fields["State"].strip().startswith("Z"):
                pids.append(int(pid))
        except (OSError, ValueError, KeyError):
            continue
    return pids


def _kill_uid(uid: int) -> None:
    """SIGKILL every process whose real uid is ``uid`` (root only), until none is left."""
    for _ in range(100):
        pids = _pids_of_uid(uid)
        if not pids:
            return
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                continue
        time.sleep(0.005)


def _kill_group(pgid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)


def run_python(
    source: str, limits: Limits = Limits(), *, require_isolation: bool = False, report: bool = False
) -> RunResult:
    """Run ``source`` in the sandbox; ``passed`` iff it ran to the end (nonce seen) with exit status 0."""
    nonce = secrets.token_hex(16)
    root = os.geteuid() == 0
    uid = secrets.randbelow(2_000_000_000 - 1_000_000) + 1_000_000 if root else os.getuid()
    base = tempfile.mkdtemp(prefix="distillm-sandbox-")
    workdir = os.path.join(base, "work")
    os.mkdir(workdir, 0o700)
    with open(os.path.join(workdir, "prog.py"), "w", encoding="utf-8") as fh:
        fh.write(source)
    if root:
        os.chown(workdir, uid, uid)
        os.chown(os.path.join(workdir, "prog.py"), uid, uid)
    cfg = {
        "uid": uid,
        "memory_bytes": limits.memory_bytes,
        "cpu_s": int(limits.timeout_s) + 2,
        "file_bytes": limits.file_bytes,
        "open_files": limits.open_files,
        "processes": limits.processes,
        "user_processes": 0 if root else len(_pids_of_uid(uid)),
        "preimport": preimports(source),
        "parent_mnt_ns": os.readlink("/proc/self/ns/mnt"),
        "require_isolation": require_isolation,
        "report": report,
    }
    env = {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8", "PYTHONHASHSEED": "0", "OMP_NUM_THREADS": "1"}
    start = time.monotonic()
    try:
        proc = subprocess.Popen(
            [sys.executable, "-I", "-S", "-c", _DRIVER, json.dumps(cfg)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            cwd=workdir,
            env=env,
            start_new_session=True,
            close_fds=True,
        )
    except OSError as err:
        shutil.rmtree(base, ignore_errors=True)
        return RunResult("sandbox_error", None, f"cannot start sandbox: {err}", 0.0)
    try:
        status, output = _supervise(proc, nonce, limits, start, uid if root else None)
    finally:
        _kill_group(proc.pid)
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        if root:
            _kill_uid(uid)
        shutil.rmtree(base, ignore_errors=True)
    duration = time.monotonic() - start
    if status is None:
        seen = ("\n" + nonce + "\n") in output
        output = output.replace("\n" + nonce + "\n", "")
        if proc.returncode == 97:
            status = "sandbox_error"
        elif proc.returncode == 0:
            status = "passed" if seen else "no_sentinel"
        else:
            status = "failed"
    return RunResult(status, proc.returncode, output, duration)


def _supervise(
    proc: subprocess.Popen, nonce: str, limits: Limits, start: float, uid: int | None
) -> tuple[Status | None, str]:
    """Feed the nonce, collect capped output until EOF; returns (forced status or None, output).

    Once the program's main process has exited, leftover processes (which may hold the pipe open, even after
    ``setsid``) are killed: by process group, and by uid when running as root; without root a short grace
    period bounds the wait.
    """
    if proc.stdin is None or proc.stdout is None:
        raise RuntimeError("sandbox process was started without pipes")
    try:
        proc.stdin.write((nonce + "\n").encode())
        proc.stdin.close()
    except BrokenPipeError:
        pass
    chunks: list[bytes] = []
    size = 0
    cap = limits.output_bytes + len(nonce) + 2
    forced: Status | None = None
    exited_at: float | None = None
    with selectors.DefaultSelector() as sel:
        sel.register(proc.stdout, selectors.EVENT_READ)
        while True:
            now = time.monotonic()
            left = limits.timeout_s - (now - start)
            if exited_at is None and left <= 0:
                forced = "timeout"
                break
            if exited_at is not None and now - exited_at > 0.5:
                break  # main process done; an unkillable straggler holds the pipe (non-root fallback)
            if not sel.select(timeout=max(0.0, min(left, 0.05))):
                if exited_at is None and proc.poll() is not None:  # exited, but a child may hold the pipe
                    exited_at = time.monotonic()
                    _kill_group(proc.pid)
                    if uid is not None:
                        _kill_uid(uid)
                continue
            data = os.read(proc.stdout.fileno(), 65536)
            if not data:
                break
            chunks.append(data)
            size += len(data)
            if size > cap:
                forced = "output_limit"
                break
    if forced:
        _kill_group(proc.pid)
    proc.stdout.close()
    text = b"".join(chunks)[:cap].decode("utf-8", errors="replace")
    return forced, text


def run_many(
    sources: Sequence[str],
    limits: Limits = Limits(),
    workers: int = 0,
    progress: Callable[[int], None] | None = None,
) -> list[RunResult]:
    """Run programs in parallel (``workers`` threads, each driving one sandboxed process); results in order."""
    workers = workers or max(1, min(8, os.cpu_count() or 1))

    def one(src: str) -> RunResult:
        result = run_python(src, limits)
        if progress is not None:
            progress(1)
        return result

    with ThreadPoolExecutor(max_workers=workers) as pool:
        results = list(pool.map(one, sources))
    broken = [r for r in results if r.status == "sandbox_error"]
    if broken:
        raise SandboxError(f"the sandbox failed to run {len(broken)} program(s): {broken[0].output.strip()[-300:]}")
    return results


@lru_cache(maxsize=1)
def isolation() -> dict[str, object]:
    """What containment is active on this machine (probed once by running a tiny program)."""
    result = run_python("pass", report=True)
    first = result.output.strip().splitlines()[0] if result.output.strip() else "{}"
    try:
        info = json.loads(first)
    except json.JSONDecodeError:
        info = {"error": result.output[-500:]}
    info["scorer_root"] = os.geteuid() == 0
    info["uid_drop"] = info["scorer_root"] and info.get("uid") not in (None, 0)
    return info
