"""The README's extension examples, literally: each ```python block of "Extending" that names its file is applied to a
copy of the repository (a new file, or appended to an existing one), and that copy's contract tests run on it."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def extending_blocks() -> list[tuple[str, str]]:
    """``(path, code)`` for every python block of the README's "Extending" section; its first line names the file."""
    text = (ROOT / "README.md").read_text()
    section = text.split("## Extending", 1)[1].split("\n## ", 1)[0]
    blocks = []
    for code in re.findall(r"```python\n(.*?)```", section, flags=re.S):
        first = code.splitlines()[0]
        assert first.startswith("# ") and first.endswith(".py"), f"a README example must name its file: {first!r}"
        blocks.append((first[2:].strip(), code))
    return blocks


def test_every_extending_example_names_its_file():
    paths = [p for p, _ in extending_blocks()]
    assert paths == ["tasks/capitals.py", "distill/losses.py", "distill/methods.py"]


def _copy_repo(dest: Path) -> None:
    files = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard"], cwd=ROOT, capture_output=True, text=True
    ).stdout.split()
    for rel in files:
        if rel.startswith(("results/", "tasks/", "distill/", "bench/", "tests/")) or "/" not in rel:
            if rel.startswith("results/") or not (ROOT / rel).is_file():
                continue
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / rel, dest / rel)


@pytest.mark.slow  # a copy of the repository and three pytest runs in it: ~60 s
def test_readme_extension_examples_pass_the_contract_tests(tmp_path):
    repo = tmp_path / "repo"
    _copy_repo(repo)
    for rel, code in extending_blocks():
        target = repo / rel
        if target.exists():  # an addition to an existing module
            target.write_text(target.read_text() + "\n\n" + code)
        else:
            target.write_text(code)
    env = {**os.environ, "PYTHONPATH": str(repo), "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}

    def pytest_in_copy(*args: str, **extra_env: str) -> subprocess.CompletedProcess:
        cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-m", "not slow and not gpu", *args]
        return subprocess.run(cmd, cwd=repo, env={**env, **extra_env}, capture_output=True, text=True, timeout=900)

    where = subprocess.run(
        [sys.executable, "-c", "import tasks, distill; print(tasks.__file__, distill.__file__)"],
        cwd=repo, env=env, capture_output=True, text=True,
    )  # fmt: skip
    assert where.stdout.count(str(repo)) == 2, where.stdout + where.stderr  # the copy's code, not the checkout's
    # a new task records its prompt snapshot once (as the README says), then passes every task contract
    first = pytest_in_copy("tests/test_tasks.py", "-k", "capitals", UPDATE_SNAPSHOTS="1")
    assert "passed" in first.stdout and first.returncode == 0, first.stdout[-3000:]
    task = pytest_in_copy("tests/test_tasks.py", "-k", "capitals or registry or one_file")
    assert task.returncode == 0 and " passed" in task.stdout, task.stdout[-3000:]
    loss = pytest_in_copy("tests/test_losses.py", "tests/test_chunked.py", "-k", "jeffreys")
    assert loss.returncode == 0 and re.search(r"[1-9]\d* passed", loss.stdout), loss.stdout[-3000:]
    method = pytest_in_copy("tests/test_train.py", "-k", "test_every_method_trains_and_writes_outputs and jeffreys")
    assert method.returncode == 0 and "1 passed" in method.stdout, method.stdout[-3000:]
