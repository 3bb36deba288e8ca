"""Opaque keyset (cursor) pagination over an ascending primary key: stable under inserts."""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from typing import Any

from django.db.models import QuerySet

from tarifa.core.errors import DomainError

MAX_LIMIT = 500


@dataclass(frozen=True)
class Page:
    items: list[Any]
    next_cursor: str | None


def encode_cursor(last_id: int) -> str:
    return base64.urlsafe_b64encode(json.dumps({"after": last_id}).encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> int:
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        after = json.loads(base64.urlsafe_b64decode(padded.encode()))["after"]
        if not isinstance(after, int):
            raise ValueError
        return after
    except (ValueError, KeyError, TypeError, json.JSONDecodeError):
        raise DomainError("invalid_cursor", "The cursor is not one this API returned.", field="cursor")


def paginate(queryset: QuerySet, *, cursor: str | None, limit: int) -> Page:
    if not 1 <= limit <= MAX_LIMIT:
        raise DomainError("invalid_limit", f"limit must be between 1 and {MAX_LIMIT}.", field="limit")
    if cursor:
        queryset = queryset.filter(pk__gt=decode_cursor(cursor))
    rows = list(queryset.order_by("pk")[: limit + 1])
    has_more = len(rows) > limit
    rows = rows[:limit]
    return Page(items=rows, next_cursor=encode_cursor(rows[-1].pk) if has_more else None)
