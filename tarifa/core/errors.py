"""Expected failures of a use case, carried to the edge (HTTP or CLI) unchanged.

Services raise DomainError for input the caller can fix; the API turns it into a 4xx body
`{"code", "field", "message"}` and the CLI into exit code 2 with one line.
"""

from __future__ import annotations


class DomainError(Exception):
    status = 422

    def __init__(self, code: str, message: str, *, field: str | None = None, status: int | None = None):
        super().__init__(message)
        self.code = code
        self.message = message
        self.field = field
        if status is not None:
            self.status = status

    def as_dict(self) -> dict:
        body = {"code": self.code, "message": self.message}
        if self.field is not None:
            body["field"] = self.field
        return body


class NotFound(DomainError):
    status = 404

    def __init__(self, what: str, key: str, *, scope: str = " for this tenant"):
        super().__init__(f"{what}_not_found", f"No {what.replace('_', ' ')} '{key}'{scope}.")


class Conflict(DomainError):
    status = 409


# PostgreSQL's SQLSTATEs for a value its column cannot hold.
STRING_TOO_LONG = "22001"
NUMERIC_OUT_OF_RANGE = "22003"
LOCK_NOT_AVAILABLE = "55P03"  # lock_timeout ran out
UNIQUE_VIOLATION = "23505"


def is_unique_violation(error: BaseException) -> bool:
    """Whether a database error is a duplicate key: PostgreSQL's SQLSTATE, SQLite's message."""
    return sqlstate(error) == UNIQUE_VIOLATION or "UNIQUE constraint failed" in str(error)


def sqlstate(error: BaseException) -> str | None:
    """The SQLSTATE of a database error: psycopg's own (raw cursors, as the set-based SQL uses) or
    the one Django's wrapper (DataError, …) carries as its cause; None for anything else."""
    return getattr(error, "sqlstate", None) or getattr(error.__cause__, "sqlstate", None)
