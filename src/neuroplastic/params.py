"""Typed ``--param key=value`` pairs, read from a callable's signature.

The annotation of each keyword parameter decides how its text is read: ``bool`` takes
true/false, ``int`` an integer, ``float`` a finite number, ``str`` the text, ``X | None``
also none, and anything else (tuples, sequences, unions) a JSON value. A bad key, a repeated
key or a value of the wrong type is one :class:`NeuroplasticError` naming the allowed keys.
Ranges are checked by the method's own constructor.
"""

from __future__ import annotations

import inspect
import json
import math
from collections.abc import Callable, Iterable
from typing import Any

from neuroplastic.errors import NeuroplasticError

_TRUE, _FALSE = ("true", "yes", "1"), ("false", "no", "0")


def keyword_parameters(target: Callable[..., Any]) -> dict[str, inspect.Parameter]:
    """The keyword(-only or positional-or-keyword) parameters of ``target`` with a name a user
    can set (not ``self``, not ``*args`` / ``**kwargs``)."""
    return {name: p for name, p in inspect.signature(target).parameters.items()
            if p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD) and name != "self"}


def describe(params: dict[str, inspect.Parameter]) -> str:
    """``name: type = default`` for each parameter, comma separated."""
    parts = []
    for name, p in params.items():
        kind = annotation_of(p)
        default = "" if p.default is inspect.Parameter.empty else f" = {p.default!r}"
        parts.append(f"{name}: {kind}{default}" if kind else f"{name}{default}")
    return ", ".join(parts) or "none"


def split_items(items: Iterable[str], *, option: str = "--param") -> dict[str, str]:
    """``key=value`` texts as a dict; a malformed or repeated key is an error."""
    raw: dict[str, str] = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep or not name.isidentifier():
            raise NeuroplasticError(f"{option} must look like name=value, got {item!r}")
        if name in raw:
            raise NeuroplasticError(f"{option} {name} is given twice ({raw[name]!r} and {value!r})")
        raw[name] = value
    return raw


def annotation_of(p: inspect.Parameter) -> str:
    """The parameter's type as written (or its default's type where it has no annotation)."""
    a = p.annotation
    if a is inspect.Parameter.empty:
        return type(p.default).__name__ if p.default not in (None, inspect.Parameter.empty) else ""
    return a if isinstance(a, str) else getattr(a, "__name__", str(a))


def convert(name: str, text: str, p: inspect.Parameter) -> Any:
    """``text`` as the type ``p`` is annotated with; one line naming the problem otherwise."""
    annotation = annotation_of(p).replace(" ", "")
    optional = annotation.endswith("|None") or annotation.startswith("None|")
    base = annotation.removesuffix("|None").removeprefix("None|")
    lowered = text.strip().lower()
    if optional and lowered in ("none", "null"):
        return None
    if base == "bool":
        if lowered in _TRUE:
            return True
        if lowered in _FALSE:
            return False
        raise NeuroplasticError(f"--param {name} must be true or false, got {text!r}")
    if base == "int":
        try:
            return int(text)
        except ValueError:
            raise NeuroplasticError(f"--param {name} must be an integer, got {text!r}") from None
    if base == "float":
        try:
            value = float(text)
        except ValueError:
            raise NeuroplasticError(f"--param {name} must be a number, got {text!r}") from None
        if not math.isfinite(value):
            raise NeuroplasticError(f"--param {name} must be a finite number, got {text!r}")
        return value
    if base == "str":
        return text
    try:
        value = json.loads(text)
    except ValueError:
        value = text
    if base.startswith("int|") and not (isinstance(value, int) and not isinstance(value, bool)) and not (
            isinstance(value, list) and all(isinstance(v, int) and not isinstance(v, bool) for v in value)):
        raise NeuroplasticError(f"--param {name} must be an integer or a JSON list of integers, got {text!r}")
    if base.startswith("tuple[") and not isinstance(value, list):
        raise NeuroplasticError(f"--param {name} must be a JSON list like [0.9, 0.999], got {text!r}")
    return tuple(value) if base.startswith("tuple[") else value


def typed_params(target: Callable[..., Any], raw: dict[str, str], *, what: str,
                 extra: dict[str, inspect.Parameter] | None = None) -> dict[str, Any]:
    """``raw`` texts typed by the signature of ``target`` (and by ``extra``, parameters of the
    options a runner takes beside the method's own); unknown keys name the allowed ones."""
    params = {**keyword_parameters(target), **(extra or {})}
    out = {}
    for name, text in raw.items():
        if name not in params:
            raise NeuroplasticError(f"{what} has no hyperparameter {name!r}; it takes: {describe(params)}")
        out[name] = convert(name, text, params[name])
    return out
