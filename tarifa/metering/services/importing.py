"""Importing usage files in chunks.

On PostgreSQL each chunk is staged with COPY and rated, stored and folded in SQL (`bulk`), one
transaction per chunk; an Asterisk Master.csv goes to COPY as text lines without building a Python
record per line. On SQLite a chunk goes through the same ingestion as the API.
"""

from __future__ import annotations

import io
import json
import queue
import re
import threading
from collections import Counter
from dataclasses import dataclass, field
from typing import Callable, Iterable, TextIO
from zoneinfo import ZoneInfo

from django.conf import settings
from django.db import connection, transaction

from tarifa.metering.importers import (
    Skipped, Unreadable, asterisk_attributes, asterisk_cdrs, in_local_zone, read_asterisk_csv,
)
from tarifa.metering.services import bulk
from tarifa.metering.services.plans import KIND_PATTERN
from tarifa.metering.services.ingestion import (
    CONFLICT, ID_PATTERN, MAX_RECORDS_PER_CALL, OccurredWindow, RecordResult, _Rejected, check_attributes,
    clean_record, ingest_usage, parse_quantity, rejection, text_value,
)
from tarifa.ops.metrics import count_usage
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
                 on_progress: Callable[[int], None] | None = None, timezone: str | None = None) -> ImportReport:
    """Import parsed records (any format's reader). With `timezone` (an IANA name the caller
    checked), times written without a UTC offset are read in that zone; without it they are
    rejected, as the API rejects them: guessing a zone would misplace them by hours."""
    if timezone:
        records = in_local_zone(records, tz=ZoneInfo(timezone))
    if connection.vendor == "postgresql":
        return _import_staged(tenant=tenant, rows=_clean_rows(records, window=OccurredWindow.from_now()),
                              chunk_size=chunk_size, on_progress=on_progress)
    report = ImportReport()
    chunk: list[dict] = []
    chunk_size = chunk_size or MAX_RECORDS_PER_CALL

    def flush() -> None:
        for result in ingest_usage(tenant=tenant, records=chunk).results:
            report.note(result)
        if on_progress:
            on_progress(len(chunk))
        chunk.clear()

    passed_over = ImportReport()
    for record in records:
        if _passed_over(record, passed_over):
            continue
        chunk.append(record)
        if len(chunk) >= chunk_size:
            flush()
    if chunk:
        flush()
    count_usage(passed_over.counts)  # ingest_usage counted the others
    report.counts += passed_over.counts
    report.problems = (passed_over.problems + report.problems)[:MAX_PROBLEMS]
    return report


def import_asterisk(*, tenant: Tenant, stream: TextIO, kind: str = "call", timezone: str | None = None,
                    chunk_size: int | None = None, on_progress: Callable[[int], None] | None = None) -> ImportReport:
    """Import an Asterisk Master.csv. Its start times are the PBX's wall-clock times, read in
    `timezone` (an IANA name the caller checked; default the tenant's): a PBX in another zone
    than the tenant's (Brazil has four) would otherwise place its calls hours off, and those
    near midnight on the first of a month in the wrong month."""
    if not KIND_PATTERN.match(kind):
        raise ValueError(f"'{kind}' is not a usage kind (lowercase words joined by dots)")
    zone = ZoneInfo(timezone) if timezone else tenant.tzinfo
    if connection.vendor != "postgresql":
        return import_usage(tenant=tenant, records=read_asterisk_csv(stream, tz=zone, kind=kind),
                            chunk_size=chunk_size, on_progress=on_progress)
    window = OccurredWindow.from_now().local_texts(zone)
    return _import_staged(tenant=tenant, rows=_asterisk_rows(asterisk_cdrs(stream), kind=kind, window=window),
                          chunk_size=chunk_size, on_progress=on_progress, local_zone=zone.key)


def _passed_over(record, report: ImportReport) -> bool:
    """Count lines that are not records (unbillable, unreadable); True when `record` is one."""
    if isinstance(record, Skipped):
        report.counts["skipped"] += 1
        return True
    if isinstance(record, Unreadable):
        report.note(RecordResult(record["id"], "rejected", "unreadable_line", record["_error"]))
        return True
    return False


def _clean_rows(records: Iterable[dict], *, window: OccurredWindow):
    """Stage lines (copy_line of STAGE_COLUMNS but seq) of parsed records, or what to report."""
    for record in records:
        if isinstance(record, (Skipped, Unreadable)):
            yield record
            continue
        try:
            clean = clean_record(record, with_hash=False, window=window)
        except _Rejected as rejected:
            yield rejection(record, rejected)
            continue
        yield bulk.copy_line((clean.id, clean.customer, clean.kind, str(clean.quantity), clean.occurred_at.isoformat(),
                              None, clean.destination, clean.attributes_json))


# Characters a JSON string must escape; attributes without any are written out directly.
JSON_SPECIAL = re.compile(r'[\x00-\x1f"\\]')
KEPT_JSON_OVERHEAD = len(json.dumps(asterisk_attributes(("", "", "", "", "-")), separators=(",", ":"))) - 1


def _is_whole_count(text: str) -> bool:
    """ASCII digits that fit a quantity as they are (str.isdigit alone admits "４５")."""
    return text.isascii() and text.isdigit() and len(text) < 17


def _asterisk_rows(cdrs, *, kind: str, window: tuple[str, str]):
    """Stage lines (copy_line of STAGE_COLUMNS but seq) of answered calls, checked as the API
    checks a record (same codes). The usual CDR takes a fast path: it is valid and needs no
    escaping, so its line is formatted directly (json.dumps and a CSV writer had cost 10 µs).
    `window` is OccurredWindow in the wall-clock time of the zone the start times are written in."""
    earliest, latest = window
    # Kept values short enough that their attributes fit in any encoding (4 bytes a character at most).
    room = (settings.TARIFA_USAGE_ATTRIBUTES_MAX_BYTES - KEPT_JSON_OVERHEAD) // 4
    for cdr in cdrs:
        if isinstance(cdr, dict):
            yield cdr
            continue
        _line, uniqueid, account, billsec, start, dst, kept = cdr
        src, dcontext, channel, duration, userfield = kept
        kept_text = src + dcontext + channel + duration + userfield
        if (ID_PATTERN.match(uniqueid) and account and len(account) <= 128 and len(dst) <= 64
                and _is_whole_count(billsec) and earliest <= start <= latest and len(kept_text) <= room
                and not bulk.COPY_SPECIAL_OR_NUL.search(uniqueid + account + dst) and not JSON_SPECIAL.search(kept_text)):
            extra = f', "userfield": "{userfield}"' if userfield else ""
            # Local time: PostgreSQL reads it in the import's zone (occurred_local, store_stage's local_zone).
            yield (f'{uniqueid}\t{account}\t{kind}\t{billsec}\t\\N\t{start}\t{dst}\t{{"src": "{src}", '
                   f'"dcontext": "{dcontext}", "channel": "{channel}", "duration": "{duration}"{extra}}}')
            continue
        try:
            record_id = text_value(uniqueid, "id")
            if not ID_PATTERN.match(record_id):
                raise _Rejected("invalid_id", "'id' must be 1-128 visible ASCII characters.")
            customer = text_value(account, "customer")
            quantity = billsec if _is_whole_count(billsec) else str(parse_quantity(billsec))
            if start < earliest:
                raise OccurredWindow.too_early()
            if start > latest:
                raise OccurredWindow.in_future()
            destination = text_value(dst, "destination", required=False, limit=64)
            attributes_json = check_attributes(asterisk_attributes(kept))
        except _Rejected as rejected:
            yield RecordResult(uniqueid, "rejected", rejected.code, rejected.message)
            continue
        yield bulk.copy_line((record_id, customer, kind, quantity, None, start, destination, attributes_json))


class _ImportStopped(Exception):
    """An earlier chunk of the import failed; this one is not stored."""


class _Turns:
    """Chunks commit in file order. A chunk may stage and rate while the one before it is still
    being stored, but it waits for that one's commit before it writes anything shared (summaries,
    records, rate snapshots), so the import stores what a one-chunk-at-a-time import would, and
    the waits in Python can never close a cycle with a lock wait in PostgreSQL. When a chunk
    fails, the chunks before it still commit and the ones after it do not."""

    def __init__(self) -> None:
        self._committed = 0
        self.failure: BaseException | None = None
        self._failed_chunk: int | None = None
        self._changed = threading.Condition()

    def wait_for(self, chunk: int) -> None:
        """Block until every chunk before `chunk` has committed; raise if one of them failed."""
        with self._changed:
            while self._committed < chunk - 1 and not self._failed_before(chunk):
                self._changed.wait()
            if self._failed_before(chunk):
                raise _ImportStopped()

    def committed(self, chunk: int) -> None:
        with self._changed:
            self._committed = chunk
            self._changed.notify_all()

    def fail(self, error: BaseException, *, chunk: int) -> None:
        with self._changed:
            if self._failed_chunk is None or chunk < self._failed_chunk:
                self.failure, self._failed_chunk = error, chunk
            self._changed.notify_all()

    def stopped(self) -> bool:
        return self.failure is not None

    def _failed_before(self, chunk: int) -> bool:
        return self._failed_chunk is not None and self._failed_chunk < chunk


def _import_staged(*, tenant: Tenant, rows, chunk_size: int | None,
                   on_progress: Callable[[int], None] | None, local_zone: str | None = None) -> ImportReport:
    """Stage, store and fold chunks of rows, one transaction each.

    A reader thread parses and encodes the chunks; `TARIFA_IMPORT_CONNECTIONS` storers (each
    with its own database connection) take them in turn, so PostgreSQL stages and rates one
    chunk while it stores and folds the one before (_Turns keeps the commits in order). Inside
    a caller's transaction the import stays on the caller's connection, one chunk at a time.
    The queue holds one chunk, so memory stays constant."""
    chunk_size = chunk_size or settings.TARIFA_IMPORT_CHUNK_SIZE
    storers = 1 if connection.in_atomic_block else max(1, settings.TARIFA_IMPORT_CONNECTIONS)
    read_report, store_report = ImportReport(), ImportReport()
    chunks: queue.Queue = queue.Queue(maxsize=1)
    turns = _Turns()
    reporting = threading.Lock()

    def hand_over(item) -> bool:
        while not turns.stopped():
            try:
                chunks.put(item, timeout=0.2)
                return True
            except queue.Full:
                continue
        return False

    def take():
        """The next chunk (a chunk after a failed one stops at its turn), or None at the end."""
        while True:
            try:
                return chunks.get(timeout=0.2)
            except queue.Empty:
                if turns.stopped():
                    raise _ImportStopped() from None

    number = 0  # of the last chunk handed over

    def read() -> None:
        nonlocal number
        try:
            buffer, staged, seq = io.StringIO(), 0, 0
            for row in rows:
                if isinstance(row, RecordResult):
                    read_report.note(row)
                    continue
                if isinstance(row, dict):
                    _passed_over(row, read_report)
                    continue
                seq += 1
                buffer.write(f"{seq}\t{row}\n")
                staged += 1
                if staged >= chunk_size:
                    number += 1
                    if not hand_over((number, buffer.getvalue(), staged)):
                        return
                    buffer, staged = io.StringIO(), 0
            if staged:
                number += 1
                hand_over((number, buffer.getvalue(), staged))
            for _ in range(storers):
                hand_over(None)
        except BaseException as exc:  # the chunks handed over still commit
            turns.fail(exc, chunk=number + 1)

    def store(in_thread: bool) -> None:
        chunk = 0
        try:
            while (item := take()) is not None:
                chunk, text, staged = item
                result = _store_chunk(tenant=tenant, text=text, wait_turn=lambda: turns.wait_for(chunk),
                                      local_zone=local_zone)
                turns.committed(chunk)
                count_usage({status: result.counts.get(status, 0) for status in ("accepted", "duplicate", "conflict")})
                with reporting:
                    for status in ("accepted", "duplicate", "conflict"):
                        store_report.counts[status] += result.counts.get(status, 0)
                    for external_id in result.conflict_ids:
                        if len(store_report.problems) < MAX_PROBLEMS:
                            store_report.problems.append(RecordResult(external_id, "conflict", "id_conflict",
                                                                      CONFLICT))
                    if on_progress:
                        on_progress(staged)
        except _ImportStopped:
            pass
        except BaseException as exc:
            turns.fail(exc, chunk=chunk)
        finally:
            if in_thread:
                connection.close()

    reader = threading.Thread(target=read, name="usage-import-reader", daemon=True)
    helpers = [threading.Thread(target=store, args=(True,), name=f"usage-import-storer-{n}", daemon=True)
               for n in range(1, storers)]
    reader.start()
    for helper in helpers:
        helper.start()
    store(False)
    for helper in helpers:
        helper.join()
    if turns.failure is None:
        turns.fail(_ImportStopped(), chunk=number + 1)  # releases the reader if it is still waiting
    reader.join()
    if not isinstance(turns.failure, _ImportStopped):
        raise turns.failure
    with transaction.atomic():  # durable before we report it: flushes the WAL of every chunk
        with connection.cursor() as cursor:
            cursor.execute("SELECT txid_current()")  # a transaction id, so the commit is a real flush
    count_usage(read_report.counts)  # the lines never staged: unbillable or unreadable
    report = ImportReport(counts=read_report.counts + store_report.counts,
                          problems=(read_report.problems + store_report.problems)[:MAX_PROBLEMS])
    return report


def _store_chunk(*, tenant: Tenant, text: str, wait_turn: Callable[[], None], local_zone: str | None = None):
    """One chunk in one transaction: stage its COPY text, then rate, store and fold it."""
    with transaction.atomic():
        # Chunks commit without waiting for the WAL flush; the import's last commit waits, and
        # flushing it flushes every chunk before it. A crash mid-import may lose the last chunks,
        # which running the import again stores (the ids deduplicate).
        with connection.cursor() as cursor:
            cursor.execute("SET LOCAL synchronous_commit = off")
        bulk.create_stage()
        bulk.copy_text([text])
        # A summary that cannot hold the chunk's records had stopped the import: they are stored
        # unfolded instead, for the workers' fold to set aside.
        return bulk.store_stage_folding(tenant=tenant, folded_by="import", wait_turn=wait_turn, local_zone=local_zone)
