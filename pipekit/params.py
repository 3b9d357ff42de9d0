"""Parameters as ClearML keeps them: ``Section/key`` strings that remember their type.

Pure functions: flatten a connected object into parameters, parse a ``Section/key`` name, and
cast a stored string back to the type of the value it overrides.
"""

from __future__ import annotations

import ast
import json
from collections.abc import Iterator, Mapping
from typing import Any

from .errors import ParameterError
from .models import ParamInfo

DEFAULT_SECTION = "General"
_TRUE = {"true", "1", "yes", "y", "on"}
_FALSE = {"false", "0", "no", "n", "off", ""}


def split_name(name: str, default_section: str = DEFAULT_SECTION) -> tuple[str, str]:
    """``"Section/key"`` -> ``("Section", "key")``; a bare ``"key"`` goes to ``General``.

    :raises ParameterError: an empty section or key, or a leading/trailing/double ``/``.
    """
    if not isinstance(name, str) or not name.strip():
        raise ParameterError(f"invalid parameter name {name!r}: expected 'Section/key'", name)
    if "/" not in name:
        return default_section, name
    section, _, key = name.partition("/")
    if not section or not key or key.startswith("/") or key.endswith("/") or "//" in key:
        raise ParameterError(
            f"invalid parameter name {name!r}: expected 'Section/key' with a non-empty "
            "section and key", name)
    return section, key


def type_name(value: Any) -> str:
    return type(value).__name__


def to_text(value: Any) -> str:
    """The stored string form of a parameter value."""
    if isinstance(value, str):
        return value
    if isinstance(value, (list, tuple, dict, set)):
        return repr(value)
    return str(value)


def flatten(mapping: Mapping[str, Any], prefix: str = "") -> Iterator[tuple[str, Any]]:
    """Nested dicts become ``a/b`` keys, as ClearML shows them."""
    for key, value in mapping.items():
        full = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            yield from flatten(value, f"{full}/")
        else:
            yield full, value


def to_params(section: str, mapping: Mapping[str, Any],
              descriptions: Mapping[str, str] | None = None) -> list[ParamInfo]:
    return [ParamInfo(section=section, name=str(key), value=to_text(value),
                      type=type_name(value), description=(descriptions or {}).get(key, ""))
            for key, value in flatten(mapping)]


def cast(text: str, like: Any = None, stored_type: str | None = None,
         name: str = "") -> Any:
    """Turn a stored string back into the type of ``like`` (or of ``stored_type``).

    :raises ParameterError: the string cannot be read as that type (naming the parameter).
    """
    target = type(like) if like is not None else None
    kind = target.__name__ if target is not None else (stored_type or "str")
    try:
        if kind == "bool":
            lowered = text.strip().lower()
            if lowered in _TRUE:
                return True
            if lowered in _FALSE:
                return False
            raise ValueError("not a boolean")
        if kind == "int":
            try:
                return int(text)
            except ValueError:
                try:
                    as_float = float(text)  # "3.0" is an int; "3.5" and "abc" are not
                except ValueError:
                    as_float = 0.5
                if not as_float.is_integer():
                    raise ValueError("not an int") from None
                return int(as_float)
        if kind == "float":
            try:
                return float(text)
            except ValueError:
                raise ValueError("not a float") from None
        if kind == "str":
            return text
        if kind == "NoneType":
            return None if text in ("None", "") else _literal(text)
        if kind in ("list", "tuple", "dict", "set"):
            parsed = _literal(text)
            if kind == "tuple" and isinstance(parsed, list):
                parsed = tuple(parsed)
            if type(parsed).__name__ != kind:
                raise ValueError(f"not a {kind}")
            return parsed
        if target is not None:
            return target(text)
        return text
    except (ValueError, TypeError, SyntaxError) as exc:
        why = "" if str(exc).startswith("not a") else f" ({exc})"
        raise ParameterError(
            f"parameter {name or '?'!r}: cannot read {text!r} as {kind}{why}", name
        ) from exc


def _literal(text: str) -> Any:
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        try:
            return json.loads(text)
        except ValueError:
            return text


def as_params(values: Mapping[str, Any], existing: Mapping[str, ParamInfo]
              ) -> list[ParamInfo]:
    """``{"Section/key": value}`` as parameters, each keeping the type and description of
    the one it replaces in ``existing`` (a new key gets its value's type).
    """
    out = []
    for key, value in values.items():
        section, name = split_name(key)
        old = existing.get(f"{section}/{name}")
        out.append(ParamInfo(section, name, to_text(value),
                             old.type if old is not None else type_name(value),
                             old.description if old is not None else ""))
    return out


def cast_param(param: ParamInfo) -> Any:
    """A stored parameter as a value of the type it was connected with."""
    return cast(param.value, stored_type=param.type, name=param.key)


def typed_overrides(existing: Mapping[str, ParamInfo], overrides: Mapping[str, str]
                    ) -> dict[str, Any]:
    """Text overrides (``--param Args/epochs=3``) as values of each existing parameter's type.

    A new key stays text. Every name and cast is checked before anything is written.

    :raises ParameterError: a malformed name, or text that the parameter's type cannot read.
    """
    out: dict[str, Any] = {}
    for full, text in overrides.items():
        section, key = split_name(full)
        name = f"{section}/{key}"
        param = existing.get(name)
        out[name] = text if param is None else cast(text, stored_type=param.type, name=name)
    return out


def config_text(value: Any) -> tuple[str, str]:
    """A configuration object as stored: ``(text, "text")`` for a string, else JSON."""
    if isinstance(value, str):
        return value, "text"
    return json.dumps(value, default=str, indent=2), "json"
