"""Values that PostgreSQL can store: its text and jsonb types refuse the NUL character and half a
character (an unpaired UTF-16 surrogate, which JSON can write as a \\uD800 escape), and jsonb refuses
NaN and Infinity (which Python's json reads), so any value holding one must be refused as input,
or the statement storing it fails (a 500, a failed chunk)."""

from __future__ import annotations

import json
import re

from tarifa.core.errors import DomainError

NUL = "\x00"
NUL_REFUSED = "must not contain NUL (\\u0000) characters."
# How JSON text writes a surrogate; only text holding one can decode to an unpaired surrogate.
SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")
LONE_SURROGATE = "holds half a character: a \\uD800-\\uDFFF escape without its pair"


def nul_path(value, path: str = "") -> str | None:
    """Where a JSON-like `value` holds a NUL, in a key or a string: a path such as `rates[0].name`
    (`path` itself for `value`), or None."""
    if isinstance(value, str):
        return path if NUL in value else None
    if isinstance(value, dict):
        for key, item in value.items():
            inner = f"{path}.{key}" if path else str(key)
            if NUL in str(key):
                return inner
            if (found := nul_path(item, inner)) is not None:
                return found
    elif isinstance(value, list):
        for index, item in enumerate(value):
            if (found := nul_path(item, f"{path}[{index}]")) is not None:
                return found
    return None


def has_nonfinite(value) -> bool:
    """Whether a JSON-like `value` holds NaN or ±Infinity."""
    try:
        json.dumps(value, allow_nan=False, default=str)
    except ValueError:
        return True
    return False


def has_lone_surrogate(value) -> bool:
    """Whether a JSON-like `value` holds an unpaired surrogate, which UTF-8 cannot encode."""
    try:
        json.dumps(value, ensure_ascii=False, default=str).encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def check_lengths(model, values: dict, *, where: str = "", columns: dict[str, str] | None = None) -> None:
    """DomainError value_too_long for the first text in `values` longer than `model`'s field of that
    name (or of the name `columns` maps it to) allows: PostgreSQL fails the statement (a 500),
    SQLite stores it. `where` prefixes the field named in the error ("rates[2]")."""
    for name, value in values.items():
        if not isinstance(value, str):
            continue
        limit = getattr(model._meta.get_field((columns or {}).get(name, name)), "max_length", None)
        if limit is not None and len(value) > limit:
            field = f"{where}.{name}" if where else name
            raise DomainError("value_too_long", f"{field} is longer than {limit} characters.", field=field)
