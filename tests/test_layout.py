"""The package layout's rules, checked on the source: tasks are data and scoring (they import nothing from the
trainer or the benchmark), and no module imports itself back through others (no import cycles)."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("bench", "distill", "tasks")


def _imports() -> dict[str, set[str]]:
    """module -> the project modules it imports anywhere (also inside functions), except under TYPE_CHECKING."""
    mods = {
        (pkg if f.stem == "__init__" else f"{pkg}.{f.stem}"): f for pkg in PACKAGES for f in (ROOT / pkg).glob("*.py")
    }
    graph: dict[str, set[str]] = {}
    for name, path in mods.items():
        tree = ast.parse(path.read_text())
        typing_only = {
            id(x)
            for n in ast.walk(tree)
            if isinstance(n, ast.If) and getattr(n.test, "id", "") == "TYPE_CHECKING"
            for b in n.body
            for x in ast.walk(b)
        }
        deps = set()
        for node in ast.walk(tree):
            if id(node) in typing_only:
                continue
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                deps |= {node.module} | {f"{node.module}.{a.name}" for a in node.names}
            elif isinstance(node, ast.Import):
                deps |= {a.name for a in node.names}
        graph[name] = {d for d in deps if d in mods and d != name}
    return graph


def test_tasks_import_nothing_from_the_trainer_or_the_benchmark():
    offenders = {m: sorted(d) for m, deps in _imports().items() if m.startswith("tasks") for d in [
        {x for x in deps if x.split(".")[0] in ("distill", "bench")}] if d}  # fmt: skip
    assert not offenders, offenders


def test_no_import_cycles():
    graph = _imports()
    state: dict[str, int] = {}  # 1: on the current path, 2: done

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for dep in sorted(graph[node]):
            if state.get(dep) == 1:
                raise AssertionError("import cycle: " + " -> ".join([*path[path.index(dep) :], dep]))
            if dep not in state:
                visit(dep, [*path, dep])
        state[node] = 2

    for module in sorted(graph):
        if module not in state:
            visit(module, [module])


def test_modules_stay_small_and_the_training_loop_short():
    sizes = {
        str(f.relative_to(ROOT)): len(f.read_text().splitlines())
        for pkg in PACKAGES
        for f in (ROOT / pkg).glob("*.py")
    }
    assert not {f: n for f, n in sizes.items() if n > 500}, "modules over 500 lines"
    assert sizes["distill/train.py"] <= 400
    fit = next(n for n in ast.parse((ROOT / "distill/train.py").read_text()).body if getattr(n, "name", "") == "fit")
    assert fit.end_lineno - fit.lineno + 1 <= 120
