"""Typed configuration: dataclasses + YAML + ``key=value`` overrides.

A config is a (possibly nested) dataclass. Its fields and their defaults are the only source of truth;
YAML files name experiments and the command line overrides nested keys with dots::

    load_config(TrainConfig, "configs/kd.yaml", ["optim.lr=5e-4", "loss.name=skew_reverse_kl"])

Validation is strict. An unknown key, a value of the wrong type or a value out of range raises
:class:`ConfigError` with a single line naming the key, where it came from (the file or the command line)
and what is allowed. Ranges and choices are declared on the field::

    lr: float = field(default=1e-3, metadata={"help": "peak learning rate", "min": 0.0, "exclusive_min": True})
    mode: Literal["token", "sequence"] = "token"

There is no interpolation and no import-path magic: configs refer to registered names (losses, tasks, ...).
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
import os
import types
import typing
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal, TypeVar, Union

import yaml

from distill.atomic import atomic_write_text

T = TypeVar("T")


class ConfigError(ValueError):
    """A bad config value. The message is one line: key, source and what is allowed."""


@dataclasses.dataclass(frozen=True)
class _Override:
    """A raw ``key=value`` string from the command line, parsed only once its target type is known."""

    text: str


def _parse_override(item: str) -> tuple[list[str], _Override]:
    key, sep, value = item.partition("=")
    key = key.strip()
    if not sep or not key or any(not part for part in key.split(".")):
        raise ConfigError(f"command line: malformed override {item!r}; expected key=value, e.g. optim.lr=1e-4")
    return key.split("."), _Override(value.strip())


def _set_nested(data: dict, path: list[str], value: Any, origin: str) -> None:
    node = data
    for i, part in enumerate(path[:-1]):
        child = node.get(part)
        if child is None:
            child = node[part] = {}
        elif not isinstance(child, dict):
            raise ConfigError(f"{origin}: key '{'.'.join(path[: i + 1])}' is a value, not a section")
        node = child
    node[path[-1]] = value


def _describe(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(tp))
    if origin in (Union, types.UnionType):
        return " or ".join(_describe(a) for a in typing.get_args(tp))
    if origin in (list, Sequence):
        (inner,) = typing.get_args(tp) or (Any,)
        return f"a list of {_describe(inner)}"
    if origin is dict:
        return "a mapping"
    if tp is type(None):
        return "null"
    if dataclasses.is_dataclass(tp):
        return f"a section ({tp.__name__})"
    return getattr(tp, "__name__", str(tp))


def _yaml_scalar(text: str) -> Any:
    try:
        return yaml.safe_load(text) if text != "" else ""
    except yaml.YAMLError:
        return text


def _coerce(value: Any, tp: Any, key: str, where: str) -> Any:
    """Convert ``value`` to type ``tp`` or raise a one-line :class:`ConfigError`."""
    if _is_tagged(value):  # a command-line override carries its own origin for error messages
        value, where = value
    bad = ConfigError(f"{where}: key '{key}': expected {_describe(tp)}, got {_show(value)}")
    origin = typing.get_origin(tp)
    if tp is Any:
        return _yaml_scalar(value.text) if isinstance(value, _Override) else value
    if origin in (Union, types.UnionType):
        args = typing.get_args(tp)
        if type(None) in args and (value is None or (isinstance(value, _Override) and value.text in ("null", "None"))):
            return None
        sections = [a for a in args if dataclasses.is_dataclass(a)]
        if len(sections) == 1 and isinstance(value, dict):  # an optional section: its own errors name the key
            return _coerce(value, sections[0], key, where)
        for arg in (a for a in args if a is not type(None)):
            try:
                return _coerce(value, arg, key, where)
            except ConfigError:
                continue
        raise bad
    if isinstance(value, _Override):
        if tp is str or (origin is Literal and value.text in typing.get_args(tp)):
            return value.text  # raw text: YAML would read e.g. "no" as False
        if origin in (list, Sequence) and not value.text.startswith("["):
            parts = [p.strip() for p in value.text.split(",") if p.strip()]
            return _coerce(parts, tp, key, where)
        value = _yaml_scalar(value.text)
    if origin is Literal:
        if value in typing.get_args(tp):
            return value
        raise ConfigError(f"{where}: key '{key}': {_show(value)} is not allowed; allowed values: {_describe(tp)}")
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise bad
        return _build(tp, value, key, where)
    if origin in (list, Sequence):
        if not isinstance(value, list | tuple):
            raise bad
        (inner,) = typing.get_args(tp) or (Any,)
        return [_coerce(v, inner, f"{key}[{i}]", where) for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise bad
        _, inner = typing.get_args(tp) or (str, Any)
        return {str(k): _coerce(v, inner, f"{key}.{k}", where) for k, v in value.items()}
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise bad
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, str):
            try:
                return int(value)
            except ValueError:
                raise bad from None
        raise bad
    if tp is float:
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):  # PyYAML reads "1e-3" (no dot) as a string
            try:
                return float(value)
            except ValueError:
                raise bad from None
        raise bad
    if tp is str:
        if isinstance(value, str):
            return value
        if isinstance(value, int | float) and not isinstance(value, bool):
            return str(value)
        raise bad
    raise ConfigError(f"{where}: key '{key}': unsupported field type {tp!r}")


def _literal_words(tp: Any) -> tuple:
    return typing.get_args(tp) if typing.get_origin(tp) is Literal else ()


def _yaml_word(value: Any, choices) -> Any:
    """YAML reads an unquoted ``off``/``no`` as False and ``on``/``yes`` as True: where a field's choices are words,
    such a boolean means the word among them (``validation: off``, ``mixed_precision: no``)."""
    if not isinstance(value, bool) or not choices:
        return value
    words = [w for w in (("on", "yes", "true") if value else ("off", "no", "false")) if w in choices]
    return words[0] if words else value


def _show(value: Any) -> str:
    if isinstance(value, _Override):
        return repr(value.text)
    return f"{value!r} ({type(value).__name__})"


def _check_range(value: Any, f: dataclasses.Field, key: str, where: str) -> None:
    meta = f.metadata
    if value is None:
        return
    if "choices" in meta and value not in meta["choices"]:
        allowed = ", ".join(repr(c) for c in meta["choices"])
        raise ConfigError(f"{where}: key '{key}': {value!r} is not allowed; allowed values: {allowed}")
    items = value if isinstance(value, list) else [value]
    for v in items:
        lo, hi = meta.get("min"), meta.get("max")
        lo_x, hi_x = meta.get("exclusive_min", False), meta.get("exclusive_max", False)
        too_low = lo is not None and (v <= lo if lo_x else v < lo)
        too_high = hi is not None and (v >= hi if hi_x else v > hi)
        if too_low or too_high:
            parts = []
            if lo is not None:
                parts.append(f"{lo} {'<' if lo_x else '<='} value")
            if hi is not None:
                parts.append(f"value {'<' if hi_x else '<='} {hi}")
            raise ConfigError(f"{where}: key '{key}': {v!r} is out of range; allowed: {' and '.join(parts)}")


def _build(cls: type[T], data: dict, prefix: str, where: str) -> T:
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    kwargs: dict[str, Any] = {}
    for name, value in data.items():
        key = f"{prefix}.{name}" if prefix else str(name)
        if name not in fields:
            close = difflib.get_close_matches(str(name), list(fields), n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else ""
            section = f" under '{prefix}'" if prefix else ""
            origin = value[1] if _is_tagged(value) else where
            raise ConfigError(
                f"{origin}: unknown key '{key}'{hint}; allowed keys{section}: {', '.join(sorted(fields))}"
            )
        src = value[1] if _is_tagged(value) else where
        value = _yaml_word(value, fields[name].metadata.get("choices") or _literal_words(hints[name]))
        coerced = _coerce(value, hints[name], key, where)
        _check_range(coerced, fields[name], key, src)
        kwargs[name] = coerced
    missing = [n for n, f in fields.items() if n not in kwargs and _is_required(f)]
    if missing:
        raise ConfigError(f"{where}: missing required key '{(prefix + '.') if prefix else ''}{missing[0]}'")
    try:
        return cls(**kwargs)
    except ConfigError as err:
        raise ConfigError(f"{where}: {err}") from None


def _is_tagged(value: Any) -> bool:
    return isinstance(value, tuple) and len(value) == 2 and isinstance(value[0], _Override)


def _is_required(f: dataclasses.Field) -> bool:
    return f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING  # type: ignore[misc]


def _tag_overrides(data: dict, overrides: Sequence[str]) -> None:
    for item in overrides:
        path, value = _parse_override(item)
        _set_nested(data, path, (value, f"command line override {item!r}"), f"command line override {item!r}")


def load_config(
    cls: type[T], path: str | os.PathLike | None = None, overrides: Sequence[str] = (), data: dict | None = None
) -> T:
    """Build ``cls`` from an optional YAML file (or a mapping, ``data``: e.g. another config's
    :func:`config_to_dict`) and ``key=value`` overrides (applied in order)."""
    require(path is None or data is None, "load_config takes a YAML file or a mapping, not both")
    data = copy.deepcopy(data) if data is not None else {}
    where = "defaults" if not data else "the mapping"
    if path is not None:
        p = Path(path)
        if not p.is_file():
            raise ConfigError(f"config file not found: {p}")
        try:
            loaded = yaml.safe_load(p.read_text()) or {}
        except yaml.YAMLError as err:
            line = getattr(getattr(err, "problem_mark", None), "line", None)
            at = f" (line {line + 1})" if line is not None else ""
            raise ConfigError(f"{p}: invalid YAML{at}: {getattr(err, 'problem', err)}") from None
        if not isinstance(loaded, dict):
            raise ConfigError(f"{p}: expected a mapping at the top level, got {type(loaded).__name__}")
        data = loaded
        where = str(p)
    _tag_overrides(data, overrides)
    return _build(cls, data, "", where)


def config_to_dict(cfg: Any) -> dict:
    """The fully resolved config as plain Python data (what :func:`save_config` writes)."""
    return dataclasses.asdict(cfg)


def save_config(cfg: Any, path: str | os.PathLike) -> Path:
    """Write the fully resolved config as YAML, atomically. Returns the path."""
    text = yaml.safe_dump(config_to_dict(cfg), sort_keys=False, default_flow_style=False)
    atomic_write_text(path, text)
    return Path(path)


def did_you_mean(name: str, known) -> str:
    """`` (did you mean 'x'?)`` for the closest of ``known`` names, or an empty string."""
    close = difflib.get_close_matches(str(name), list(known), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def require(cond: bool, message: str) -> None:
    """Validation helper for ``__post_init__``: raise a :class:`ConfigError` with ``message`` unless ``cond``."""
    if not cond:
        raise ConfigError(message)


def field_help(cls: type) -> dict[str, str]:
    """Field name -> help text, for ``--help`` listings."""
    return {f.name: f.metadata.get("help", "") for f in dataclasses.fields(cls)}


def config_reference(cls: type, prefix: str = "", defaults: Any = None) -> list[tuple[str, str, str, str]]:
    """Every key of config ``cls`` (nested sections as dotted keys): ``(key, type, default, help)``, read off the
    dataclasses themselves (``--help-config``). A nested section's defaults are those of the instance its field
    builds (``TrainConfig.teacher_sampling`` samples at 0.8, not at ``SamplingParams``'s own 0.0)."""
    import typing

    hints = typing.get_type_hints(cls)
    rows = []
    for f in dataclasses.fields(cls):
        key, hint = prefix + f.name, hints[f.name]
        if defaults is not None:
            default = getattr(defaults, f.name)
        else:
            default = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
        if dataclasses.is_dataclass(hint):
            rows += config_reference(hint, key + ".", None if default is dataclasses.MISSING else default)
            continue
        text = getattr(hint, "__name__", None) if isinstance(hint, type) else None
        text = text or str(hint).replace("typing.", "")
        value = "(required)" if default is dataclasses.MISSING else repr(default)
        rows.append((key, text, value, f.metadata.get("help", "")))
    return rows


def print_config_reference(cls: type) -> None:
    """``--help-config``: the table of :func:`config_reference`."""
    from tabulate import tabulate

    print(tabulate(config_reference(cls), headers=["key", "type", "default", "help"]))
    print("\nSet any key in the YAML (nested sections as mappings) or as key=value on the command line.")
