"""Importing usage files in chunks.

On PostgreSQL each chunk is staged with COPY and rated, stored and folded in SQL (`bulk`), one
transaction per chunk; an Asterisk Master.csv goes to COPY as CSV text without building a Python
record per line. On SQLite a chunk goes through the same ingestion as the API.
"""

from __future__ import annotations

import csv
import io
import json
import queue
import threading
from collections import Counter
from dataclasses import dataclass, field
from typing import Callable, Iterable, TextIO

from django.conf import settings
from django.db import connection, transaction

from tarifa.metering.importers import Skipped, asterisk_cdrs, read_asterisk_csv
from tarifa.metering.services.plans import KIND_PATTERN
from tarifa.metering.services.ingestion import (
    CONFLICT, ID_PATTERN, MAX_RECORDS_PER_CALL, RecordResult, _Rejected, clean_record, ingest_usage, parse_quantity,
    rejection, text_value,
)
from tarifa.tenants.models import Tenant

MAX_PROBLEMS = 20


@dataclass
class ImportReport:
    counts: Counter = field(default_factory=Counter)
    problems: list[RecordResult] = field(default_factory=list)  # the first few, to show the user

    def note(self, result: RecordResult) -> None:
        self.counts[result.status] += 1
        if result.status in ("rejected", "conflict") and len(self.problems) < MAX_PROBLEMS:
            self.problems.append(result)


def import_usage(*, tenant: Tenant, records: Iterable[dict], chunk_size: int | None = None,
                 on_progress: Callable[[int], None] | None = None) -> ImportReport:
    """Import parsed records (any format's reader)."""
    if connection.vendor == "postgresql":
        return _import_staged(tenant=tenant, rows=_clean_rows(records), chunk_size=chunk_size, on_progress=on_progress)
    report = ImportReport()
    chunk: list[dict] = []
    chunk_size = chunk_size or MAX_RECORDS_PER_CALL

    def flush() -> None:
        for result in ingest_usage(tenant=tenant, records=chunk).results:
            report.note(result)
        if on_progress:
            on_progress(len(chunk))
        chunk.clear()

    for record in records:
        if _passed_over(record, report):
            continue
        chunk.append(record)
        if len(chunk) >= chunk_size:
            flush()
    if chunk:
        flush()
    return report


def import_asterisk(*, tenant: Tenant, stream: TextIO, kind: str = "call", chunk_size: int | None = None,
                    on_progress: Callable[[int], None] | None = None) -> ImportReport:
    """Import an Asterisk Master.csv."""
    if not KIND_PATTERN.match(kind):
        raise ValueError(f"'{kind}' is not a usage kind (lowercase words joined by dots)")
    if connection.vendor != "postgresql":
        return import_usage(tenant=tenant, records=read_asterisk_csv(stream, tz=tenant.tzinfo, kind=kind),
                            chunk_size=chunk_size, on_progress=on_progress)
    return _import_staged(tenant=tenant, rows=_asterisk_rows(asterisk_cdrs(stream), kind=kind), chunk_size=chunk_size,
                          on_progress=on_progress)


def _passed_over(record, report: ImportReport) -> bool:
    """Count lines that are not records (unbillable, unreadable); True when `record` is one."""
    if isinstance(record, Skipped):
        report.counts["skipped"] += 1
        return True
    if "_error" in record:
        report.note(RecordResult(record["id"], "rejected", "unreadable_line", record["_error"]))
        return True
    return False


def _clean_rows(records: Iterable[dict]):
    """Stage rows (STAGE_COLUMNS, attributes as JSON text) of parsed records, or what to report."""
    for record in records:
        if isinstance(record, Skipped) or "_error" in record:
            yield record
            continue
        try:
            clean = clean_record(record, with_hash=False)
        except _Rejected as rejected:
            yield rejection(record, rejected)
            continue
        yield (clean.id, clean.customer, clean.kind, clean.quantity, clean.occurred_at.isoformat(), "",
               clean.destination, json.dumps(clean.attributes, default=str))


def _asterisk_rows(cdrs, *, kind: str):
    """Stage rows of answered calls, checked as the API checks a record (same codes)."""
    for cdr in cdrs:
        if isinstance(cdr, dict):
            yield cdr
            continue
        _line, uniqueid, account, billsec, start, dst, attributes = cdr
        try:
            record_id = text_value(uniqueid, "id")
            if not ID_PATTERN.match(record_id):
                raise _Rejected("invalid_id", "'id' must be 1-128 visible ASCII characters.")
            customer = text_value(account, "customer")
            quantity = billsec if billsec.isdigit() and len(billsec) < 17 else str(parse_quantity(billsec))
            destination = text_value(dst, "destination", required=False, limit=64)
        except _Rejected as rejected:
            yield RecordResult(uniqueid, "rejected", rejected.code, rejected.message)
            continue
        # Local time: PostgreSQL applies the tenant's zone (occurred_local).
        yield (record_id, customer, kind, quantity, "", start, destination, json.dumps(attributes))


def _import_staged(*, tenant: Tenant, rows, chunk_size: int | None,
                   on_progress: Callable[[int], None] | None) -> ImportReport:
    """Stage, store and fold chunks of rows, one transaction each. A reader thread parses and
    encodes the next chunk while PostgreSQL works on this one (the GIL is free while psycopg
    waits); the queue holds one chunk, so memory stays constant."""
    from tarifa.metering.services import bulk

    chunk_size = chunk_size or settings.TARIFA_IMPORT_CHUNK_SIZE
    read_report, store_report = ImportReport(), ImportReport()
    chunks: queue.Queue = queue.Queue(maxsize=1)
    stop = threading.Event()

    def hand_over(item) -> bool:
        while not stop.is_set():
            try:
                chunks.put(item, timeout=0.2)
                return True
            except queue.Full:
                continue
        return False

    def read() -> None:
        try:
            buffer, staged, seq = io.StringIO(), 0, 0
            writer = csv.writer(buffer, lineterminator="\n")
            for row in rows:
                if isinstance(row, RecordResult):
                    read_report.note(row)
                    continue
                if isinstance(row, dict):
                    _passed_over(row, read_report)
                    continue
                seq += 1
                writer.writerow((seq, *row))
                staged += 1
                if staged >= chunk_size:
                    if not hand_over((buffer.getvalue(), staged)):
                        return
                    buffer, staged = io.StringIO(), 0
                    writer = csv.writer(buffer, lineterminator="\n")
            if staged:
                hand_over((buffer.getvalue(), staged))
            hand_over(None)
        except BaseException as exc:  # handed to the importing thread, which raises it
            hand_over(exc)

    reader = threading.Thread(target=read, name="usage-import-reader", daemon=True)
    reader.start()
    try:
        while (item := chunks.get()) is not None:
            if isinstance(item, BaseException):
                raise item
            text, staged = item
            with transaction.atomic():
                # Chunks commit without waiting for the WAL flush; the final commit below waits,
                # and flushing it flushes every chunk before it. A crash mid-import may lose the
                # last chunks, which running the import again stores (the ids deduplicate).
                with connection.cursor() as cursor:
                    cursor.execute("SET LOCAL synchronous_commit = off")
                bulk.create_stage()
                bulk.copy_csv([text])
                result = bulk.store_stage(tenant=tenant, fold=True, folded_by="import")
            for status in ("accepted", "duplicate", "conflict"):
                store_report.counts[status] += result.counts.get(status, 0)
            for external_id in result.conflict_ids:
                if len(store_report.problems) < MAX_PROBLEMS:
                    store_report.problems.append(RecordResult(external_id, "conflict", "id_conflict", CONFLICT))
            if on_progress:
                on_progress(staged)
    finally:
        stop.set()
        reader.join()
    with transaction.atomic():  # durable before we report it: flushes the WAL of every chunk
        with connection.cursor() as cursor:
            cursor.execute("SELECT txid_current()")  # a transaction id, so the commit is a real flush
    report = ImportReport(counts=read_report.counts + store_report.counts,
                          problems=(read_report.problems + store_report.problems)[:MAX_PROBLEMS])
    return report
