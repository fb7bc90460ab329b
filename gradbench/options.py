"""Keyword options given as strings (``--param``, ``--estimator-arg``, ``--model-arg``).

Every configurable thing in gradbench (an estimator, a model, a toy problem) takes its settings
as keyword arguments of ``__init__`` with typed defaults; this module turns ``KEY=VALUE`` strings
into those types and rejects unknown keys with a message that lists the valid ones.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Iterable
from typing import Any, TypeVar, get_type_hints

T = TypeVar("T")


def parse_key_values(items: Iterable[str], flag: str) -> dict[str, str]:
    """Split ``KEY=VALUE`` strings into a dict; a malformed item raises ValueError."""
    parsed: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip() or not value.strip():
            raise ValueError(f"malformed {flag} {item!r}; expected KEY=VALUE")
        parsed[key.strip()] = value.strip()
    return parsed


def option_defaults(cls: type) -> dict[str, Any]:
    """The keyword options of ``cls.__init__`` and their defaults."""
    params = inspect.signature(cls.__init__).parameters
    return {
        name: p.default
        for name, p in params.items()
        if name != "self" and p.kind is inspect.Parameter.KEYWORD_ONLY
    }


def _convert(raw: str, annotation: Any, key: str) -> Any:
    text = str(annotation)
    try:
        if annotation is bool or text == "bool":
            if raw.lower() in {"1", "true", "yes"}:
                return True
            if raw.lower() in {"0", "false", "no"}:
                return False
            raise ValueError(raw)
        if annotation is int or text == "int":
            return int(raw)
        if annotation is float or text == "float":
            numbers: tuple[float, ...] = (float(raw),)
        elif "tuple[float" in text:
            numbers = tuple(float(v) for v in raw.split(",") if v.strip())
        elif "tuple[int" in text:
            return tuple(int(v) for v in raw.split(",") if v.strip())
        else:
            return raw
    except ValueError:
        raise ValueError(f"bad value {raw!r} for {key}: expected {text}") from None
    # No option of gradbench takes NaN or an infinity (temperature=inf: zero gradients).
    if not all(math.isfinite(v) for v in numbers):
        raise ValueError(f"bad value {raw!r} for {key}: expected a finite number")
    return numbers[0] if annotation is float or text == "float" else numbers


def _typed_options(cls: type, options: dict[str, Any], what: str) -> dict[str, Any]:
    """``options`` with string values converted to the option types; unknown keys raise."""
    defaults = option_defaults(cls)
    unknown = sorted(set(options) - set(defaults))
    if unknown:
        valid = ", ".join(defaults) or "none"
        raise ValueError(f"unknown option(s) {', '.join(unknown)} for {what}; valid: {valid}")
    hints = get_type_hints(cls.__init__)
    return {
        key: _convert(value, hints.get(key, type(defaults[key])), key) if isinstance(value, str)
        else value
        for key, value in options.items()
    }


def build_with_options(cls: type[T], options: dict[str, Any], what: str, *args: Any) -> T:
    """Instantiate ``cls(*args, **options)``; string values are converted to the options' types.

    Unknown keys raise ValueError naming the valid ones; invalid values raise ValueError from
    the constructor's own validation.
    """
    return cls(*args, **_typed_options(cls, options, what))


def resolve_options(cls: type, options: dict[str, Any]) -> dict[str, Any]:
    """Every keyword option of ``cls`` with its value (given, else default), typed, JSON-ready.

    ``"32"`` and ``32`` (or ``"500"`` and ``(500,)``) resolve alike, so a cell's configuration
    hash does not depend on how an option was spelled or whether a default was written out.
    """
    what = f"{getattr(cls, 'name', cls.__name__)!r}"
    resolved = option_defaults(cls) | _typed_options(cls, options, what)
    return {k: list(v) if isinstance(v, tuple) else v for k, v in resolved.items()}
