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
from datetime import datetime, timezone as dt_timezone
from decimal import Decimal, InvalidOperation

from django.conf import settings
from django.db import transaction
from django.db.models import Count
from django.utils import timezone
from django.utils.dateparse import parse_datetime

from tarifa.metering.models import UsageRecord
from tarifa.metering.pricing import Rater
from tarifa.metering.services.plans import KIND_PATTERN
from tarifa.runtime.services import enqueue
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


class _Rejected(Exception):
    def __init__(self, code: str, message: str):
        self.code, self.message = code, message


def _text(record: dict, key: str, *, required: bool = True, limit: int = 128) -> str:
    value = record.get(key)
    if value is None or value == "":
        if required:
            raise _Rejected(f"missing_{key}", f"'{key}' is required.")
        return ""
    if not isinstance(value, (str, int)):
        raise _Rejected(f"invalid_{key}", f"'{key}' must be a string.")
    value = str(value).strip()
    if len(value) > limit:
        raise _Rejected(f"invalid_{key}", f"'{key}' is longer than {limit} characters.")
    return value


def clean_record(record) -> _Clean:
    if not isinstance(record, dict):
        raise _Rejected("invalid_record", "A usage record must be a JSON object.")
    record_id = _text(record, "id")
    if not ID_PATTERN.match(record_id):
        raise _Rejected("invalid_id", "'id' must be 1-128 visible ASCII characters.")
    customer = _text(record, "customer")
    kind = _text(record, "kind", limit=64)
    if not KIND_PATTERN.match(kind):
        raise _Rejected("invalid_kind", f"'{kind}' is not a usage kind (lowercase words joined by dots).")
    raw_quantity = record.get("quantity")
    try:
        if isinstance(raw_quantity, bool) or raw_quantity is None:
            raise InvalidOperation
        quantity = Decimal(str(raw_quantity))
    except (InvalidOperation, ValueError):
        raise _Rejected("invalid_quantity", "'quantity' must be a number.")
    if not quantity.is_finite() or quantity < 0 or quantity.as_tuple().exponent < -6 or quantity >= Decimal(10) ** 17:
        raise _Rejected("invalid_quantity", "'quantity' must be >= 0 with at most 6 decimal places.")
    raw_time = record.get("occurred_at")
    occurred_at = raw_time if isinstance(raw_time, datetime) else (
        parse_datetime(raw_time) if isinstance(raw_time, str) else None)
    if occurred_at is None:
        raise _Rejected("invalid_occurred_at", "'occurred_at' must be an ISO 8601 date and time.")
    if occurred_at.tzinfo is None:
        raise _Rejected("invalid_occurred_at", "'occurred_at' needs a UTC offset (e.g. 2025-12-01T10:00:00-03:00).")
    destination = _text(record, "destination", required=False, limit=64)
    attributes = record.get("attributes") or {}
    if not isinstance(attributes, dict):
        raise _Rejected("invalid_attributes", "'attributes' must be a JSON object.")
    canonical = json.dumps(
        [customer, kind, str(quantity.normalize()), occurred_at.astimezone(dt_timezone.utc).isoformat(), destination,
         attributes], sort_keys=True, separators=(",", ":"), default=str,
    )
    return _Clean(record_id, customer, kind, quantity, occurred_at, destination, attributes,
                  hashlib.sha256(canonical.encode()).hexdigest())


def ingest_usage(*, tenant: Tenant, records: list) -> IngestResult:
    """Store and rate up to MAX_RECORDS_PER_CALL records; answer per record, in input order."""
    if len(records) > MAX_RECORDS_PER_CALL:
        from tarifa.core.errors import DomainError

        raise DomainError("too_many_records", f"At most {MAX_RECORDS_PER_CALL} records per call.", field="records")
    answers: list[RecordResult | None] = [None] * len(records)
    fresh: dict[str, tuple[int, _Clean]] = {}
    for index, record in enumerate(records):
        try:
            clean = clean_record(record)
        except _Rejected as rejected:
            raw_id = record.get("id") if isinstance(record, dict) else None
            answers[index] = RecordResult(str(raw_id or ""), "rejected", rejected.code, rejected.message)
            continue
        if clean.id in fresh:  # the same id twice in one call
            same = fresh[clean.id][1].content_hash == clean.content_hash
            answers[index] = RecordResult(clean.id, "duplicate") if same else RecordResult(
                clean.id, "conflict", "id_conflict", "This id was already sent with different content.")
            continue
        fresh[clean.id] = (index, clean)

    token = uuid.uuid4().hex
    with transaction.atomic():
        stored = dict(UsageRecord.objects.filter(tenant=tenant, external_id__in=list(fresh))
                      .values_list("external_id", "content_hash"))
        rater = Rater(tenant)
        rater.preload_customers({clean.customer for _, clean in fresh.values()})
        now = timezone.now()
        rows = [
            _row(tenant=tenant, clean=clean, rater=rater, token=token, now=now)
            for external_id, (_, clean) in fresh.items() if external_id not in stored
        ]
        UsageRecord.objects.bulk_create(rows, batch_size=1000, ignore_conflicts=True)
        # A concurrent call may have stored some of these ids first: the token tells whose row it is.
        stored.update({
            external_id: (content_hash, ingest_token) for external_id, content_hash, ingest_token in
            UsageRecord.objects.filter(tenant=tenant, external_id__in=[r.external_id for r in rows])
            .values_list("external_id", "content_hash", "ingest_token")
        })
        touched = {(r.customer_id, r.period) for r in rows if r.status == UsageRecord.Status.RATED}
        _queue_full_batches(touched)
    for external_id, (index, clean) in fresh.items():
        found = stored[external_id]
        content_hash, owner = found if isinstance(found, tuple) else (found, None)
        if owner == token:
            answers[index] = RecordResult(external_id, "accepted")
        elif content_hash == clean.content_hash:
            answers[index] = RecordResult(external_id, "duplicate")
        else:
            answers[index] = RecordResult(external_id, "conflict", "id_conflict",
                                          "This id was already stored with different content.")
    return IngestResult(results=answers)


def _row(*, tenant: Tenant, clean: _Clean, rater: Rater, token: str, now) -> UsageRecord:
    rating = rater.rate(customer_ref=clean.customer, kind=clean.kind, quantity=clean.quantity,
                        occurred_at=clean.occurred_at, destination=clean.destination)
    return UsageRecord(
        tenant=tenant, external_id=clean.id, content_hash=clean.content_hash, ingest_token=token,
        customer_ref=clean.customer, customer_id=rating.customer_id, kind=clean.kind, quantity=clean.quantity,
        occurred_at=clean.occurred_at, period=rater.period_of(clean.occurred_at), destination=clean.destination,
        attributes=clean.attributes, received_at=now, status=rating.status, unrated_reason=rating.reason,
        plan_id=rating.plan_id, rate_id=rating.rate_id, rated_kind=rating.rated_kind,
        billable_quantity=rating.billable_quantity, rate_snapshot=rating.snapshot or {},
    )


def _queue_full_batches(touched: set[tuple[int, str]]) -> None:
    """Queue a fold for every (customer, period) with a full batch waiting; the sweep folds the rest."""
    if not touched:
        return
    batch = settings.TARIFA_FOLD_BATCH_SIZE
    waiting = (
        UsageRecord.objects.filter(status=UsageRecord.Status.RATED, customer_id__in={c for c, _ in touched})
        .values("customer_id", "period").annotate(n=Count("id"))
    )
    for row in waiting:
        if (row["customer_id"], row["period"]) in touched and row["n"] >= batch:
            enqueue("metering.fold", payload={"customer_id": row["customer_id"], "period": row["period"]})


def rerate_unrated(*, tenant: Tenant, reason: str | None = None, limit: int = 100_000) -> dict[str, int]:
    """Try again to rate records that could not be rated (after a customer, plan or rate was added)."""
    records = UsageRecord.objects.filter(tenant=tenant, status=UsageRecord.Status.UNRATED)
    if reason:
        records = records.filter(unrated_reason=reason)
    rater = Rater(tenant)
    outcome = Counter()
    with transaction.atomic():
        batch = list(records.select_for_update().order_by("occurred_at", "id")[:limit])
        rater.preload_customers({r.customer_ref for r in batch})
        touched = set()
        for record in batch:
            rating = rater.rate(customer_ref=record.customer_ref, kind=record.kind, quantity=record.quantity,
                                occurred_at=record.occurred_at, destination=record.destination)
            apply_rating(record, rating)
            outcome[rating.status] += 1
            if rating.status == UsageRecord.Status.RATED:
                touched.add((record.customer_id, record.period))
        UsageRecord.objects.bulk_update(batch, RATING_FIELDS, batch_size=500)
        for customer_id, period in touched:
            enqueue("metering.fold", payload={"customer_id": customer_id, "period": period})
    return {"rated": outcome["rated"], "unrated": outcome["unrated"]}


RATING_FIELDS = ["status", "unrated_reason", "customer", "plan", "rate", "rated_kind", "billable_quantity",
                 "rate_snapshot"]


def apply_rating(record: UsageRecord, rating) -> None:
    record.status, record.unrated_reason = rating.status, rating.reason
    record.customer_id, record.plan_id, record.rate_id = rating.customer_id, rating.plan_id, rating.rate_id
    record.rated_kind, record.billable_quantity = rating.rated_kind, rating.billable_quantity
    record.rate_snapshot = rating.snapshot or {}
