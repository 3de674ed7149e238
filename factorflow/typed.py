"""Strict, typed dataclasses from plain data (as read from TOML) and back: unknown keys, wrong
types and wrong lengths are one-line ValueErrors naming the key, the expected type and the value.
Used by the run config (:mod:`factorflow.config`) and by every experiment's settings."""

from __future__ import annotations

import dataclasses
import difflib
import json
import math
import tomllib
import types
import typing
from typing import Any, TypeVar, get_type_hints

T = TypeVar("T")

__all__ = ["build_dataclass", "config_to_dict", "set_by_path", "to_toml"]


def _build(cls: type, data: dict[str, Any], where: str) -> Any:
    if not isinstance(data, dict):
        raise ValueError(f"{where.rstrip('.') or 'config'} must be a table, got {data!r}")
    hints = get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    kwargs = {}
    for key, value in data.items():
        if key not in names:
            close = difflib.get_close_matches(key, names, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ValueError(f"unknown config key {where + key!r}{hint}; allowed: {names}")
        kwargs[key] = _coerce(value, hints[key], where + key)
    try:
        return cls(**kwargs)
    except TypeError as e:
        raise ValueError(f"{where.rstrip('.') or 'config'}: {e}") from None


def _type_name(typ: Any) -> str:
    origin, args = typing.get_origin(typ), typing.get_args(typ)
    if origin in (types.UnionType, typing.Union):
        return " or ".join(_type_name(a) for a in args)
    if origin is tuple:
        if len(args) == 2 and args[1] is Ellipsis:
            return f"a list of {_type_name(args[0])}"
        return f"a list of {len(args)} ({', '.join(_type_name(a) for a in args)})"
    if origin is typing.Literal:
        return "one of " + ", ".join(repr(a) for a in args)
    if typ is type(None):
        return "none"
    if dataclasses.is_dataclass(typ):
        return f"a table ({typ.__name__})"
    return {bool: "true or false", float: "a number", int: "an integer", str: "a string"}.get(
        typ, getattr(typ, "__name__", str(typ))
    )


def _coerce(value: Any, typ: Any, key: str) -> Any:
    """``value`` (as read from TOML) checked against the annotation ``typ`` and converted
    (lists to tuples, integers to floats); a mismatch is a ValueError naming the key, the
    expected type and the value."""
    origin, args = typing.get_origin(typ), typing.get_args(typ)

    def bad() -> ValueError:
        return ValueError(f"config key {key!r} must be {_type_name(typ)}, got {value!r}")

    if origin in (types.UnionType, typing.Union):
        if value is None and type(None) in args:
            return None
        for a in args:
            if a is type(None):
                continue
            try:
                return _coerce(value, a, key)
            except ValueError:
                continue
        raise bad()
    if origin is typing.Literal:
        if value not in args or isinstance(value, bool) != any(isinstance(a, bool) for a in args):
            raise bad()
        return value
    if origin is tuple:
        if not isinstance(value, list | tuple):
            raise bad()
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_coerce(v, args[0], f"{key}[{i}]") for i, v in enumerate(value))
        if len(value) != len(args):
            raise bad()
        return tuple(
            _coerce(v, a, f"{key}[{i}]") for i, (v, a) in enumerate(zip(value, args, strict=True))
        )
    if dataclasses.is_dataclass(typ):
        if dataclasses.is_dataclass(value):
            return value
        return _build(typ, value, f"{key}.")
    if typ is bool:
        if not isinstance(value, bool):
            raise bad()
        return value
    if typ is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise bad()
        return float(value)
    if typ is int:
        if isinstance(value, bool) or not (
            isinstance(value, int) or (isinstance(value, float) and value.is_integer())
        ):
            raise bad()
        return int(value)
    if typ is str and not isinstance(value, str):
        raise bad()
    return value


def build_dataclass(cls: type[T], data: dict[str, Any], where: str = "") -> T:
    """Strictly build the (nested, frozen) dataclass ``cls`` from plain ``data`` (as read from
    TOML): unknown keys, wrong types and wrong lengths are ``ValueError`` naming the key, the
    expected type and the given value; lists become tuples."""
    return _build(cls, data, where)


def to_toml(data: dict[str, Any]) -> str:
    """``data`` (plain values, lists and nested dicts, as :func:`config_to_dict` gives) as TOML
    text that ``tomllib`` reads back to the same dict. ``None`` has no TOML form: such keys are
    left out, so a field that may be None must default to None to round-trip."""

    def value(v: Any, key: str) -> str:
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, int | float):
            return repr(v) if not isinstance(v, float) or math.isfinite(v) else str(v)
        if isinstance(v, str):
            return json.dumps(v)
        if isinstance(v, list | tuple):
            return "[" + ", ".join(value(x, key) for x in v) + "]"
        raise ValueError(f"{key!r}: {v!r} has no TOML form")

    def table(d: dict[str, Any], prefix: str) -> list[str]:
        lines = [
            f"{k} = {value(v, k)}"
            for k, v in d.items()
            if v is not None and not isinstance(v, dict)
        ]
        for k, v in d.items():
            if isinstance(v, dict):
                lines += ["", f"[{prefix}{k}]", *table(v, f"{prefix}{k}.")]
        return lines

    return "\n".join(table(data, "")) + "\n"


def config_to_dict(cfg: Any) -> dict[str, Any]:
    """Plain dict (lists for tuples) that :func:`config_from_dict` reads back to the same config."""

    def conv(v: Any) -> Any:
        if dataclasses.is_dataclass(v):
            return {f.name: conv(getattr(v, f.name)) for f in dataclasses.fields(v)}
        if isinstance(v, tuple):
            return [conv(x) for x in v]
        return v

    return conv(cfg)


def set_by_path(data: dict[str, Any], path: str, raw: str) -> None:
    """Apply ``--set section.key=value`` to a config dict; the value is parsed as TOML
    (``1e-3``, ``true``, ``[0, 1]``, ``"flow"``), falling back to a bare string."""
    try:
        value = tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        value = raw
    node = data
    parts = path.split(".")
    for p in parts[:-1]:
        node = node.setdefault(p, {})
        if not isinstance(node, dict):
            raise ValueError(f"cannot set {path!r}: {p!r} is not a section")
    node[parts[-1]] = value
