"""Importing a usage file in chunks through the same ingestion path as the API."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Callable, Iterable

from tarifa.metering.importers import Skipped
from tarifa.metering.services.ingestion import MAX_RECORDS_PER_CALL, RecordResult, ingest_usage
from tarifa.tenants.models import Tenant


@dataclass
class ImportReport:
    counts: Counter = field(default_factory=Counter)
    problems: list[RecordResult] = field(default_factory=list)  # the first few, to show the user

    def note(self, result: RecordResult) -> None:
        self.counts[result.status] += 1
        if result.status in ("rejected", "conflict") and len(self.problems) < 20:
            self.problems.append(result)


def import_usage(*, tenant: Tenant, records: Iterable[dict], chunk_size: int = MAX_RECORDS_PER_CALL,
                 on_progress: Callable[[int], None] | None = None) -> ImportReport:
    report = ImportReport()
    chunk: list[dict] = []

    def flush() -> None:
        for result in ingest_usage(tenant=tenant, records=chunk).results:
            report.note(result)
        if on_progress:
            on_progress(len(chunk))
        chunk.clear()

    for record in records:
        if isinstance(record, Skipped):
            report.counts["skipped"] += 1
            continue
        if "_error" in record:
            report.note(RecordResult(record["id"], "rejected", "unreadable_line", record["_error"]))
            continue
        chunk.append(record)
        if len(chunk) >= chunk_size:
            flush()
    if chunk:
        flush()
    return report
