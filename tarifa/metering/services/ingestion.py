"""Usage in: validate, deduplicate on the client's id, rate, store — once per id.

Each record gets its own answer: accepted, duplicate (same id, same content: counted once),
conflict (same id, different content) or rejected (with a code). Expected failures are results,
not exceptions, so one bad record never sinks the other 4,999.
"""

from __future__ import annotations

import hashlib
import json
import re
import uuid
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone as dt_timezone
from decimal import Decimal, InvalidOperation

from django.conf import settings
from django.db import connection, transaction
from django.utils import timezone
from django.utils.dateparse import parse_datetime

from tarifa.core.errors import DomainError
from tarifa.core.text import NUL, NUL_REFUSED, nul_path
from tarifa.metering.models import PendingSummary, Summary, UsageRecord
from tarifa.metering.pricing import Rater, Rating
from tarifa.metering.services.plans import KIND_PATTERN
from tarifa.ops.metrics import count_usage
from tarifa.runtime.selectors import queued_jobs
from tarifa.runtime.services import enqueue_many
from tarifa.tenants.models import Tenant

MAX_RECORDS_PER_CALL = 5000
ID_PATTERN = re.compile(r"^[\x21-\x7e]{1,128}$")  # visible ASCII, no spaces


@dataclass(frozen=True)
class RecordResult:
    id: str
    status: str  # accepted | duplicate | conflict | rejected
    code: str | None = None
    message: str | None = None


@dataclass
class IngestResult:
    results: list[RecordResult] = field(default_factory=list)

    @property
    def counts(self) -> dict[str, int]:
        counts = Counter(r.status for r in self.results)
        return {k: counts.get(k, 0) for k in ("accepted", "duplicate", "conflict", "rejected")}


@dataclass(frozen=True)
class _Clean:
    id: str
    customer: str
    kind: str
    quantity: Decimal
    occurred_at: datetime
    destination: str
    attributes: dict
    content_hash: str
    attributes_json: str  # as checked and stored: compact JSON text


class _Rejected(Exception):
    def __init__(self, code: str, message: str):
        self.code, self.message = code, message


def _text(record: dict, key: str, *, required: bool = True, limit: int = 128) -> str:
    return text_value(record.get(key), key, required=required, limit=limit)


def text_value(value, key: str, *, required: bool = True, limit: int = 128) -> str:
    if (value.__class__ is str and 0 < len(value) <= limit and not value[0].isspace() and not value[-1].isspace()
            and NUL not in value):
        return value  # the usual case, first: checked per record of every call
    if value is None or value == "":
        if required:
            raise _Rejected(f"missing_{key}", f"'{key}' is required.")
        return ""
    if not isinstance(value, (str, int)):
        raise _Rejected(f"invalid_{key}", f"'{key}' must be a string.")
    value = str(value).strip()
    if len(value) > limit:
        raise _Rejected(f"invalid_{key}", f"'{key}' is longer than {limit} characters.")
    if NUL in value:
        raise _Rejected(f"invalid_{key}", NUL_MESSAGE.format(key=key))
    return value


# A NUL in one record (core.text) had failed its whole call; it rejects that record alone.
NUL_MESSAGE = "'{key}' " + NUL_REFUSED


def check_attributes(attributes) -> str:
    """`attributes` as the compact JSON text to store, if it is an object that PostgreSQL's jsonb
    can hold (no NUL in a key or string, no NaN or Infinity) within TARIFA_USAGE_ATTRIBUTES_MAX_BYTES:
    attributes live on the usage table, and one unbounded value made its rows and the calls huge."""
    if not isinstance(attributes, dict):
        raise _Rejected("invalid_attributes", "'attributes' must be a JSON object.")
    if not attributes:
        return "{}"
    try:
        text = json.dumps(attributes, ensure_ascii=False, separators=(",", ":"), allow_nan=False, default=str)
    except ValueError:
        raise _Rejected("invalid_attributes", "'attributes' must not hold NaN or Infinity.")
    if "\\u0000" in text and nul_path(attributes) is not None:  # JSON writes a NUL so
        raise _Rejected("invalid_attributes", NUL_MESSAGE.format(key="attributes"))
    limit = settings.TARIFA_USAGE_ATTRIBUTES_MAX_BYTES
    if len(text) * 4 > limit and (size := len(text.encode())) > limit:  # UTF-8: up to 4 bytes a character
        raise _Rejected("attributes_too_large", f"'attributes' takes {size} bytes as JSON; at most {limit} are kept.")
    return text


# Usage is dated between 2000 and a day ahead of its arrival (TARIFA_USAGE_FUTURE_HOURS): a date
# outside is a client's bug (a wrong year, a swapped day and month, a scheduled time), and dates
# near the calendar's ends failed whole calls and import chunks (no UTC date, no 7-character period).
EARLIEST_OCCURRED_AT = datetime(2000, 1, 1, tzinfo=dt_timezone.utc)


@dataclass(frozen=True)
class OccurredWindow:
    """When a record may have occurred, fixed when a call or an import starts."""
    earliest: datetime
    latest: datetime

    @classmethod
    def from_now(cls) -> OccurredWindow:
        return cls(EARLIEST_OCCURRED_AT, timezone.now() + timedelta(hours=settings.TARIFA_USAGE_FUTURE_HOURS))

    def check(self, occurred_at: datetime) -> None:
        if occurred_at < self.earliest:
            raise self.too_early()
        if occurred_at > self.latest:
            raise self.in_future()

    @staticmethod
    def too_early() -> _Rejected:
        return _Rejected("occurred_at_too_early", "'occurred_at' is before 2000-01-01T00:00:00Z.")

    @staticmethod
    def in_future() -> _Rejected:
        return _Rejected("occurred_at_in_future", f"'occurred_at' is more than {settings.TARIFA_USAGE_FUTURE_HOURS:g} "
                         "hours ahead of the time it was received.")

    def local_texts(self, tz) -> tuple[str, str]:
        """The window as "YYYY-MM-DD HH:MM:SS" wall-clock times in `tz`, which compare as text."""
        return tuple(moment.astimezone(tz).strftime("%Y-%m-%d %H:%M:%S") for moment in (self.earliest, self.latest))


NO_UTC_OFFSET = "'occurred_at' needs a UTC offset (e.g. 2025-12-01T10:00:00-03:00)."


def clean_record(record, *, with_hash: bool = True, window: OccurredWindow | None = None) -> _Clean:
    if not isinstance(record, dict):
        raise _Rejected("invalid_record", "A usage record must be a JSON object.")
    record_id = _text(record, "id")
    if not ID_PATTERN.match(record_id):
        raise _Rejected("invalid_id", "'id' must be 1-128 visible ASCII characters.")
    customer = _text(record, "customer")
    kind = _text(record, "kind", limit=64)
    if not KIND_PATTERN.match(kind):
        raise _Rejected("invalid_kind", f"'{kind}' is not a usage kind (lowercase words joined by dots).")
    quantity = parse_quantity(record.get("quantity"))
    raw_time = record.get("occurred_at")
    try:
        occurred_at = raw_time if isinstance(raw_time, datetime) else (
            parse_datetime(raw_time) if isinstance(raw_time, str) else None)
    except ValueError as exc:  # written as a date and time, but not one that exists: 2025-02-30
        raise _Rejected("invalid_occurred_at", f"'occurred_at' is not a date and time that exists ({exc}).")
    if occurred_at is None:
        raise _Rejected("invalid_occurred_at", "'occurred_at' must be an ISO 8601 date and time.")
    if occurred_at.tzinfo is None:
        raise _Rejected("invalid_occurred_at", NO_UTC_OFFSET)
    (window or OccurredWindow.from_now()).check(occurred_at)
    destination = _text(record, "destination", required=False, limit=64)
    attributes = record.get("attributes") or {}
    attributes_json = check_attributes(attributes)
    if not with_hash:  # PostgreSQL hashes staged records itself (bulk.py)
        return _Clean(record_id, customer, kind, quantity, occurred_at, destination, attributes, "", attributes_json)
    canonical = json.dumps(
        [customer, kind, str(quantity.normalize()), occurred_at.astimezone(dt_timezone.utc).isoformat(), destination,
         attributes], sort_keys=True, separators=(",", ":"), default=str,
    )
    return _Clean(record_id, customer, kind, quantity, occurred_at, destination, attributes,
                  hashlib.sha256(canonical.encode()).hexdigest(), attributes_json)


MAX_QUANTITY = Decimal(10) ** 17
# A quantity as text: ASCII digits, a dot for decimals, an optional exponent. Decimal() alone also
# takes "1_000" (as 1000), digits of other scripts ("١٢" as 12) and "NaN": text that no billing
# system writes for a number, so more likely a mangled field than a count to bill.
QUANTITY_TEXT = re.compile(r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")


def parse_quantity(raw) -> Decimal:
    if raw.__class__ is int and 0 <= raw < MAX_QUANTITY:  # the usual case, first
        return Decimal(raw)
    try:
        if isinstance(raw, bool) or raw is None:
            raise InvalidOperation
        text = str(raw).strip()
        if not QUANTITY_TEXT.fullmatch(text):
            raise InvalidOperation
        quantity = Decimal(text)
    except (InvalidOperation, ValueError):
        if isinstance(raw, str) and "," in raw:  # a decimal comma (pt-BR) or a thousands separator
            raise _Rejected("invalid_quantity", "'quantity' must be a number, without commas: a dot separates "
                            "decimals (1.5) and nothing separates thousands (1500).")
        raise _Rejected("invalid_quantity", "'quantity' must be a number.")
    # Finite: QUANTITY_TEXT admits no NaN or Infinity.
    if quantity < 0 or quantity.as_tuple().exponent < -6 or quantity >= MAX_QUANTITY:
        raise _Rejected("invalid_quantity", "'quantity' must be >= 0 with at most 6 decimal places.")
    return quantity


CONFLICT = "This id was already used with different content."


def ingest_usage(*, tenant: Tenant, records: list) -> IngestResult:
    """Store and rate up to MAX_RECORDS_PER_CALL records; answer per record, in input order."""
    if len(records) > MAX_RECORDS_PER_CALL:
        raise DomainError("too_many_records", f"At most {MAX_RECORDS_PER_CALL} records per call.", field="records")
    result = (ingest_in_sql if connection.vendor == "postgresql" else ingest_in_python)(tenant=tenant, records=records)
    count_usage(result.counts)
    return result


def ingest_in_python(*, tenant: Tenant, records: list) -> IngestResult:
    """Record by record with the Python rater: SQLite's path, and the reference that the
    PostgreSQL path (`ingest_in_sql`) is tested against."""
    answers: list[RecordResult | None] = [None] * len(records)
    fresh: dict[str, tuple[int, _Clean]] = {}
    repeats: list[tuple[int, _Clean]] = []  # the same id again in this call
    window = OccurredWindow.from_now()
    for index, record in enumerate(records):
        try:
            clean = clean_record(record, window=window)
        except _Rejected as rejected:
            answers[index] = rejection(record, rejected)
            continue
        if clean.id in fresh:
            repeats.append((index, clean))
        else:
            fresh[clean.id] = (index, clean)

    with transaction.atomic():
        stored = _stored_hashes(tenant, list(fresh))
        rater = Rater(tenant)
        rater.preload_customers({clean.customer for _, clean in fresh.values()})
        rated = [(clean, rater.period_of(clean.occurred_at),
                  rater.rate(customer_ref=clean.customer, kind=clean.kind, quantity=clean.quantity,
                             occurred_at=clean.occurred_at, destination=clean.destination,
                             attributes=clean.attributes))
                 for external_id, (_, clean) in fresh.items() if external_id not in stored]
        summary_ids = ensure_summaries(tenant=tenant, keys={
            (rating.customer_id, period, rating.currency)
            for _clean, period, rating in rated if rating.status == UsageRecord.Status.RATED})
        now, token = timezone.now(), uuid.uuid4().hex
        rows = [_row(tenant, clean, rating, period, summary_ids, token, now) for clean, period, rating in rated]
        inserted = _insert(rows, token=token, tenant=tenant)
        mark_pending({row[SUMMARY_COLUMN] for row in rows if row[1] in inserted and row[SUMMARY_COLUMN]})
        lost_races = [row[1] for row in rows if row[1] not in inserted]
        stored.update(_stored_hashes(tenant, lost_races))
        queue_folds()
    for external_id, (index, clean) in fresh.items():
        answers[index] = RecordResult(external_id, "accepted") if external_id in inserted else _compared(
            clean, stored[external_id])
    # A repeated id is compared with the stored record, which is its first send in this call
    # only when nothing was stored under the id before (a first send that conflicted is not).
    for index, clean in repeats:
        answers[index] = _compared(clean, stored.get(clean.id) or fresh[clean.id][1].content_hash)
    return IngestResult(results=answers)


def _compared(clean: _Clean, stored_hash: str) -> RecordResult:
    if stored_hash == clean.content_hash:
        return RecordResult(clean.id, "duplicate")
    return RecordResult(clean.id, "conflict", "id_conflict", CONFLICT)


def rejection(record, rejected: _Rejected) -> RecordResult:
    raw_id = record.get("id") if isinstance(record, dict) else None
    return RecordResult(str(raw_id or ""), "rejected", rejected.code, rejected.message)


# How long an API call folding in place waits for a summary that another transaction holds before
# it leaves its records to the workers: a worker's batch or another call holds one for tens of
# milliseconds, but a re-rate or `billing reconcile --fix` holds a period's summaries while it runs.
API_FOLD_LOCK_WAIT = "2s"


def ingest_in_sql(*, tenant: Tenant, records: list) -> IngestResult:
    """PostgreSQL: validate here, then deduplicate, rate, store and (TARIFA_API_FOLD_IN_PLACE) fold
    in SQL, as an import chunk is (bulk.store_stage_folding). Charged by the call itself, a busy
    API's records took 73 µs of CPU each end to end in bench/usage.py, against 119 through the
    workers, whose batches of them came to a few records a summary; a summary with records
    waiting for the workers (or a wallet, or tiers) is still left to them."""
    from tarifa.metering.services import bulk

    answers: list[RecordResult | None] = [None] * len(records)
    staged: list[tuple[int, str]] = []
    rows = []
    window = OccurredWindow.from_now()
    for index, record in enumerate(records):
        try:
            clean = clean_record(record, with_hash=False, window=window)
        except _Rejected as rejected:
            answers[index] = rejection(record, rejected)
            continue
        staged.append((index, clean.id))
        rows.append((index, clean.id, clean.customer, clean.kind, clean.quantity, clean.occurred_at, None,
                     clean.destination, clean.attributes_json))
    with transaction.atomic():
        bulk.create_stage()
        bulk.copy_rows(rows)
        if settings.TARIFA_API_FOLD_IN_PLACE:
            outcomes = bulk.store_stage_folding(tenant=tenant, folded_by="api", lock_wait=API_FOLD_LOCK_WAIT).outcomes
        else:
            outcomes = bulk.store_stage(tenant=tenant, fold=False).outcomes
    for index, external_id in staged:
        outcome = outcomes.get(index, "accepted")
        answers[index] = RecordResult(external_id, outcome, *(("id_conflict", CONFLICT) if outcome == "conflict" else ()))
    return IngestResult(results=answers)


COLUMNS = (
    "tenant_id", "external_id", "content_hash", "ingest_token", "customer_ref", "customer_id", "kind", "quantity",
    "occurred_at", "period", "destination", "attributes", "received_at", "status", "unrated_reason", "plan_id",
    "rated_kind", "billable_quantity", "snapshot_id", "summary_id",
)
SUMMARY_COLUMN = COLUMNS.index("summary_id")


def _row(tenant, clean: _Clean, rating: Rating, period: str, summary_ids: dict, token: str, now) -> tuple:
    return (
        tenant.id, clean.id, clean.content_hash, token, clean.customer, rating.customer_id, clean.kind,
        clean.quantity, clean.occurred_at, period, clean.destination, clean.attributes, now, rating.status,
        rating.reason, rating.plan_id, rating.rated_kind, rating.billable_quantity,
        rating.snapshot_id, summary_ids.get((rating.customer_id, period)) if rating.status == "rated" else None,
    )


def _stored_hashes(tenant: Tenant, external_ids: list[str]) -> dict[str, str]:
    if not external_ids:
        return {}
    return dict(UsageRecord.objects.filter(tenant=tenant, external_id__in=external_ids)
                .values_list("external_id", "content_hash"))


def _insert(rows: list[tuple], *, token: str, tenant: Tenant) -> set[str]:
    """Insert rows whose id is new; returns the ids this call stored (a concurrent call may win some).
    SQLite only: PostgreSQL stores through bulk.store_stage."""
    if not rows:
        return set()
    UsageRecord.objects.bulk_create([UsageRecord(**dict(zip(COLUMNS, row))) for row in rows], batch_size=500,
                                    ignore_conflicts=True)
    return set(UsageRecord.objects.filter(tenant=tenant, external_id__in=[r[1] for r in rows], ingest_token=token)
               .values_list("external_id", flat=True))


def ensure_summaries(*, tenant: Tenant, keys: set[tuple[int, str, str]]) -> dict[tuple[int, str], int]:
    """Summary ids for (customer, period), creating the missing summaries (currency from the plan)."""
    if not keys:
        return {}
    wanted = {(c, p) for c, p, _ in keys}

    def existing() -> dict[tuple[int, str], int]:
        found = Summary.objects.filter(customer_id__in={c for c, _ in wanted}, period__in={p for _, p in wanted})
        return {(c, p): i for i, c, p in found.values_list("id", "customer_id", "period") if (c, p) in wanted}

    ids = existing()
    # Created in (customer, period) order, as in SQL (bulk): workers claim summaries in id order,
    # which decides, say, which month's usage a prepaid wallet pays first.
    missing = sorted((c, p, cur) for c, p, cur in keys if (c, p) not in ids)
    if missing:
        Summary.objects.bulk_create([Summary(tenant=tenant, customer_id=c, period=p, currency=cur)
                                     for c, p, cur in missing], ignore_conflicts=True)
        ids = existing()
    return ids


def mark_pending(summary_ids: set[int]) -> None:
    if summary_ids:
        PendingSummary.objects.bulk_create([PendingSummary(summary_id=i) for i in summary_ids], ignore_conflicts=True)


MAX_QUEUED_FOLDS = 16


def queue_folds() -> int:
    """Queue a fold job for every full batch waiting (the periodic sweep folds what is left)."""
    batch = settings.TARIFA_FOLD_BATCH_SIZE
    queued = queued_jobs(job_type="metering.fold")
    if queued >= MAX_QUEUED_FOLDS:  # the common case under load: skip counting up to 16 batches of records
        return 0
    waiting = UsageRecord.objects.filter(status=UsageRecord.Status.RATED)[: batch * MAX_QUEUED_FOLDS].count()
    missing = min(MAX_QUEUED_FOLDS, waiting // batch) - queued
    if missing > 0:
        enqueue_many("metering.fold", [{}] * missing)
    return max(0, missing)


def rerate_unrated(*, tenant: Tenant, reason: str | None = None, limit: int = 100_000) -> dict[str, int]:
    """Try again to rate records that could not be rated (after a customer, plan or rate was added)."""
    records = UsageRecord.objects.filter(tenant=tenant, status=UsageRecord.Status.UNRATED)
    if reason:
        records = records.filter(unrated_reason=reason)
    with transaction.atomic():
        batch = list(records.select_for_update().order_by("occurred_at", "id")[:limit])
        rerate_records(tenant=tenant, records=batch)
        UsageRecord.objects.bulk_update(batch, RATING_FIELDS, batch_size=500)
        mark_pending({r.summary_id for r in batch if r.summary_id})
        queue_folds()
    rated = sum(1 for r in batch if r.status == UsageRecord.Status.RATED)
    return {"rated": rated, "unrated": len(batch) - rated}


RATING_FIELDS = ["status", "unrated_reason", "customer", "plan", "rated_kind", "billable_quantity", "snapshot",
                 "summary"]


def rerate_records(*, tenant: Tenant, records: list[UsageRecord]) -> None:
    """Rate `records` again against the current plans and point the rated ones at their summaries."""
    rater = Rater(tenant)
    rater.preload_customers({r.customer_ref for r in records})
    ratings = [rater.rate(customer_ref=r.customer_ref, kind=r.kind, quantity=r.quantity,
                          occurred_at=r.occurred_at, destination=r.destination, attributes=r.attributes)
               for r in records]
    summary_ids = ensure_summaries(tenant=tenant, keys={
        (rating.customer_id, record.period, rating.currency)
        for record, rating in zip(records, ratings) if rating.status == UsageRecord.Status.RATED})
    for record, rating in zip(records, ratings):
        record.status, record.unrated_reason = rating.status, rating.reason
        record.customer_id, record.plan_id = rating.customer_id, rating.plan_id
        record.rated_kind, record.billable_quantity = rating.rated_kind, rating.billable_quantity
        record.snapshot_id = rating.snapshot_id
        record.summary_id = summary_ids.get((rating.customer_id, record.period)) if rating.status == "rated" else None


def mark_waiting_summaries() -> int:
    """Re-mark every summary with rated records waiting (a safety net for markers removed by a fold
    that could not yet see records committed concurrently); returns how many summaries wait."""
    waiting = set(UsageRecord.objects.filter(status=UsageRecord.Status.RATED, summary__isnull=False)
                  .values_list("summary_id", flat=True).distinct())
    mark_pending(waiting)
    return len(waiting)
