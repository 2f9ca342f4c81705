"""Typed-config coercion shared by every frozen config dataclass (run, model, ladder, lab specs).

* `build(cls, data)` makes dataclass ``cls`` from a nested dict (a TOML/JSON table), strictly: an
  unknown key or a wrong type is a `UserError` naming the key and what it accepts.
* `parse_text(tp, text)` parses the text of a ``key=value`` override (CLI) as type ``tp``: the same
  rules, so `train.progress=flase` and `--set ablation=flase` are both errors, never False.
"""

from __future__ import annotations

import dataclasses
import json
import types
import typing

from scalelab.errors import UserError

TRUE, FALSE = ("true", "1", "yes", "on"), ("false", "0", "no", "off")


def build(cls, data: dict, where: str = ""):
    """Build dataclass ``cls`` from a nested dict, checking every key and type."""
    if not isinstance(data, dict):
        raise UserError(f"{where or 'config'} must be a table of keys, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise UserError(f"unknown config key {join(where, unknown[0])!r}; known keys in "
                        f"[{where or 'top level'}]: {', '.join(sorted(names))}")
    kwargs = {k: coerce(hints[k], v, join(where, k)) for k, v in data.items()}
    try:
        return cls(**kwargs)
    except TypeError as e:
        raise UserError(f"bad config for [{where}]: {e}") from None


def join(where: str, key: str) -> str:
    return f"{where}.{key}" if where else key


def optional_inner(tp):
    """``X | None`` -> X; anything else unchanged."""
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        return [a for a in typing.get_args(tp) if a is not type(None)][0]
    return tp


def is_optional(tp) -> bool:
    return typing.get_origin(tp) in (typing.Union, types.UnionType) and type(None) in typing.get_args(tp)


def coerce(tp, value, where: str):
    """``value`` (from TOML/JSON) as type ``tp``, or a UserError naming ``where``."""
    if is_optional(tp):
        return None if value is None else coerce(optional_inner(tp), value, where)
    if dataclasses.is_dataclass(tp):
        return value if isinstance(value, tp) else build(tp, value, where)
    if typing.get_origin(tp) is tuple:
        if isinstance(value, (list, tuple)):
            item = typing.get_args(tp)[0]
            return tuple(coerce(item, v, f"{where}[{i}]") for i, v in enumerate(value))
    elif tp is bool:
        if isinstance(value, bool):
            return value
    elif tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():  # 1e6 written in TOML as a float
            return int(value)
    elif tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
    elif tp is str:
        if isinstance(value, str):
            return value
    else:
        return value
    raise UserError(f"config key {where!r} must be {type_name(tp)}, got {value!r}")


def type_name(tp) -> str:
    if typing.get_origin(tp) is tuple:
        return f"a list of {type_name(typing.get_args(tp)[0])}"
    return getattr(optional_inner(tp), "__name__", str(tp))


def parse_text(tp, text: str, where: str):
    """The text of a ``key=value`` override as type ``tp`` (lists are comma-separated, or
    semicolon-separated when items contain commas and colons, e.g. task specs)."""
    text = text.strip()
    if is_optional(tp):
        if text.lower() in ("none", "null"):
            return None
        tp = optional_inner(tp)
    if typing.get_origin(tp) is tuple:
        item = typing.get_args(tp)[0]
        if text.startswith("[") and text.endswith("]"):  # a list as a config file writes it: ["a", "b"]
            try:
                return tuple(parse_text(item, str(v), where) for v in json.loads(text))
            except json.JSONDecodeError:
                text = ",".join(s.strip().strip("'\"") for s in text[1:-1].split(","))
        sep = ";" if ":" in text else ","
        return tuple(parse_text(item, s, where) for s in text.split(sep) if s.strip())
    try:
        return _scalar(tp, text)
    except ValueError:
        raise UserError(f"{where} expects {type_name(tp)}, got {text!r}", arg=where) from None


def _scalar(tp, text: str):
    if tp is bool:
        if text.lower() in TRUE:
            return True
        if text.lower() in FALSE:
            return False
        raise ValueError(text)
    if tp is int:
        f = float(text)
        if not f.is_integer():
            raise ValueError(text)
        return int(f)
    if tp is float:
        return float(text)
    return text


def section_type(tp):
    """The dataclass a field holds (``X`` or ``X | None``), or None for a plain value."""
    inner = optional_inner(tp)
    return inner if dataclasses.is_dataclass(inner) else None
