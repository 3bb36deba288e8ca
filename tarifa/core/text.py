"""Values that PostgreSQL can store: its text and jsonb types refuse the NUL character, and jsonb
refuses NaN and Infinity (which Python's json reads), so any value holding one must be refused as
input, or the statement storing it fails (a 500, a failed chunk)."""

from __future__ import annotations

import json

NUL = "\x00"
NUL_REFUSED = "must not contain NUL (\\u0000) characters."


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
