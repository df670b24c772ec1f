"""Task registry: every evaluation task is one module in this package, registered by decorator.

Importing ``tasks`` imports every module of the package (sorted by name). A module that fails to import, or a
task name registered twice, raises immediately: nothing is skipped silently. Infrastructure modules (base,
scoring, sandbox, prompts, sources, world, mmath, minillm) register nothing and import their heavy dependencies lazily,
so discovery stays fast (no torch / lm-eval import).

Adding a task is one file::

    # tasks/my_task.py
    from tasks import register_task
    from tasks.base import Example, Score, Task

    @register_task("my-task")
    class MyTask(Task):
        category = "math"
        version = 1
        ...
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from tasks.base import Task

TASKS: dict[str, type[Task]] = {}


class TaskRegistryError(RuntimeError):
    """A broken task module or a duplicate task name."""


class UnknownTaskError(KeyError):
    """A task name that is not registered; the message lists the known ones."""

    def __str__(self) -> str:
        return str(self.args[0])


def register_task(name: str) -> Callable[[type[Task]], type[Task]]:
    """Class decorator: register ``cls`` under ``name`` (raises on a duplicate)."""

    def decorate(cls: type[Task]) -> type[Task]:
        if name in TASKS:
            raise TaskRegistryError(
                f"duplicate task name {name!r}: {cls.__module__}.{cls.__qualname__} and "
                f"{TASKS[name].__module__}.{TASKS[name].__qualname__}"
            )
        if not name or name != name.strip() or "," in name:
            raise TaskRegistryError(f"bad task name {name!r} in {cls.__module__}: no commas or surrounding spaces")
        cls.name = name
        TASKS[name] = cls
        return cls

    return decorate


def get_task(name: str) -> Task:
    """Instantiate the task registered as ``name``."""
    if name not in TASKS:
        raise UnknownTaskError(f"unknown task {name!r}; known tasks: {', '.join(sorted(TASKS))}")
    return TASKS[name]()


def task_names(category: str | None = None) -> list[str]:
    """Registered task names, sorted; optionally only one category."""
    return sorted(n for n, cls in TASKS.items() if category is None or cls.category == category)


def discover(package: str, path: list[str]) -> None:
    """Import every module of ``package`` (found on ``path``); any failure raises TaskRegistryError."""
    for info in sorted(pkgutil.iter_modules(path), key=lambda m: m.name):
        module = f"{package}.{info.name}"
        try:
            importlib.import_module(module)
        except TaskRegistryError:
            raise
        except Exception as err:
            raise TaskRegistryError(f"task module {module} failed to import: {type(err).__name__}: {err}") from err


discover(__name__, list(__path__))
