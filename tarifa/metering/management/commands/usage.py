from __future__ import annotations

import getpass
import sys
from pathlib import Path

from tqdm import tqdm

from tarifa.core.commands import TarifaCommand
from tarifa.core.errors import DomainError
from tarifa.metering import importers
from tarifa.metering.models import UsageRecord
from tarifa.metering.services.importing import MAX_PROBLEMS, import_asterisk, import_usage
from tarifa.metering.services.ingestion import NO_UTC_OFFSET, rerate_unrated
from tarifa.metering.services.reconciliation import rerate_period
from tarifa.metering.services.reversal import reverse_usage
from tarifa.tenants.selectors import customer_by_external_id, tenant_by_slug
from tarifa.tenants.services import check_timezone

FORMATS = ("asterisk-csv", "csv", "jsonl")


class Command(TarifaCommand):
    help = "Usage records: import files (asterisk-csv, csv, jsonl), list unrated, re-rate a period."

    def add_arguments(self, parser):
        sub = parser.add_subparsers(dest="action", required=True)
        imp = sub.add_parser("import", help="Stream a usage file into Tarifa (constant memory).")
        imp.add_argument("file")
        imp.add_argument("--tenant", required=True, help="Tenant slug.")
        imp.add_argument("--format", choices=FORMATS, required=True)
        imp.add_argument("--kind", default="call", help="Usage kind of asterisk-csv records (default: call).")
        imp.add_argument("--timezone", help="Time zone of the wall-clock times in the file, e.g. America/Manaus: an "
                                            "asterisk-csv file's start times (default: the tenant's zone), or csv "
                                            "and jsonl times written without a UTC offset (default: refused).")
        imp.add_argument("--encoding", default="utf-8",
                         help="The file's text encoding (default: utf-8; e.g. latin-1 for an older Asterisk's CDRs).")
        imp.add_argument("--no-progress", action="store_true")
        unrated = sub.add_parser("unrated", help="List usage that could not be rated, or re-rate it (--retry).")
        unrated.add_argument("--tenant", required=True)
        unrated.add_argument("--reason", choices=UsageRecord.UnratedReason.values)
        unrated.add_argument("--retry", action="store_true", help="Rate them again (after fixing customers or plans).")
        unrated.add_argument("--limit", type=int, default=50)
        rerate = sub.add_parser("rerate", help="Re-rate and re-fold a period from scratch after a tariff correction.")
        rerate.add_argument("--tenant", required=True)
        rerate.add_argument("--period", required=True, help="YYYY-MM")
        rerate.add_argument("--customer", help="Customer external_id (default: every customer).")
        reverse = sub.add_parser("reverse", help="Reverse a charged record (refund for prepaid); repeating is a no-op.")
        reverse.add_argument("--tenant", required=True)
        reverse.add_argument("id", help="The record's id (the client's idempotency key).")
        reverse.add_argument("--reason", required=True)
        reverse.add_argument("--operator", default=getpass.getuser(), help="Who asks (default: the OS user).")

    def handle(self, *args, action, **options):
        getattr(self, "_" + action)(**options)

    def _import(self, *, file, tenant, format, kind, timezone, encoding, no_progress, **_):
        owner = tenant_by_slug(slug=tenant)
        path = Path(file)
        if not path.exists():
            raise DomainError("file_not_found", f"no such file: {file}")
        if not path.is_file():
            raise DomainError("not_a_file", f"{file} is a directory or a device, not a file to import")
        if timezone is not None:
            check_timezone(timezone)
        try:
            encoding = importers.check_encoding(encoding)
        except ValueError as exc:
            raise DomainError("unknown_encoding", str(exc)) from exc
        # The import's storer threads return from PostgreSQL dozens of times a chunk; with the
        # default 5 ms interpreter slices each return can wait that long behind the reader thread.
        switch_interval = sys.getswitchinterval()
        sys.setswitchinterval(0.001)
        try:
            report = self._import_file(owner=owner, path=path, format=format, kind=kind, timezone=timezone,
                                       encoding=encoding, no_progress=no_progress)
        finally:
            sys.setswitchinterval(switch_interval)
        counts = report.counts
        self.stdout.write(
            f"imported {path.name}: accepted={counts['accepted']} duplicate={counts['duplicate']} "
            f"conflict={counts['conflict']} rejected={counts['rejected']} skipped(not billable)={counts['skipped']}"
        )
        for problem in report.problems:
            self.stdout.write(f"  {problem.status} {problem.id}: {problem.code} {problem.message or ''}")
        if timezone is None and any(problem.message == NO_UTC_OFFSET for problem in report.problems):
            self.stderr.write("import: some times have no UTC offset; if the file's times are local, name their zone "
                              "with --timezone (e.g. --timezone America/Sao_Paulo)")
        if importers.Undecodable.count:
            self.stderr.write(f"import: {importers.Undecodable.count} byte(s) of the file are not {encoding} and were "
                              "stored as U+FFFD; if the file is in another encoding, name it with --encoding")
        if counts["rejected"] or counts["conflict"]:
            # The rest is stored; exit 1 so that a scheduled import does not take the records it
            # could not store for a success.
            self.stderr.write(f"import: {counts['rejected']} rejected and {counts['conflict']} conflicting record(s) "
                              f"not imported (listed above, up to {MAX_PROBLEMS}); the rest is stored")
            sys.exit(1)

    def _import_file(self, *, owner, path: Path, format: str, kind: str, timezone: str | None, encoding: str,
                     no_progress: bool):
        importers.Undecodable.reset()
        try:
            opened = importers.open_usage_file(path, encoding=encoding)
        except ValueError as exc:
            raise DomainError("unreadable_file", str(exc)) from exc
        with opened as stream:
            bar = tqdm(unit=" records", file=sys.stderr, disable=no_progress, mininterval=0.5)
            stored = 0

            def progress(records: int) -> None:
                nonlocal stored
                stored += records
                bar.update(records)

            try:
                if format == "asterisk-csv":
                    return import_asterisk(tenant=owner, stream=stream, kind=kind, timezone=timezone,
                                           on_progress=progress)
                records = importers.read_csv(stream) if format == "csv" else importers.read_jsonl(stream)
                return import_usage(tenant=owner, records=records, on_progress=progress, timezone=timezone)
            except ValueError as exc:  # the file as a whole is unreadable (a CSV header without the columns)
                raise DomainError("unreadable_file", str(exc)) from exc
            except importers.DAMAGED_COMPRESSION as exc:
                if not importers.is_compressed(stream):
                    raise
                # Chunks commit in file order: those read before the damage are stored.
                raise DomainError("unreadable_file", f"the compressed file is damaged ({exc}): the import stopped "
                                  f"there; the {stored:,} records before were imported") from exc
            finally:
                bar.close()

    def _unrated(self, *, tenant, reason, retry, limit, **_):
        owner = tenant_by_slug(slug=tenant)
        if retry:
            result = rerate_unrated(tenant=owner, reason=reason)
            self.stdout.write(f"re-rated: now rated={result['rated']} still unrated={result['unrated']}")
            return
        records = UsageRecord.objects.filter(tenant=owner, status=UsageRecord.Status.UNRATED)
        if reason:
            records = records.filter(unrated_reason=reason)
        total = records.count()
        self.table(["id", "customer", "kind", "quantity", "occurred_at", "reason"],
                   [[r.external_id, r.customer_ref, r.kind, r.quantity, r.occurred_at.isoformat(), r.unrated_reason]
                    for r in records.order_by("id")[:limit]])
        self.stdout.write(f"{total} unrated record(s)")

    def _rerate(self, *, tenant, period, customer, **_):
        owner = tenant_by_slug(slug=tenant)
        who = customer_by_external_id(tenant=owner, external_id=customer) if customer else None
        result = rerate_period(tenant=owner, period=period, customer=who)
        self.stdout.write(f"re-rated {period}: customers={result['customers']} records={result['records']} "
                          f"billed={result['billed']} unrated={result['unrated']}")

    def _reverse(self, *, tenant, id, reason, operator, **_):
        result = reverse_usage(tenant=tenant_by_slug(slug=tenant), external_id=id, reason=reason,
                               caused_by=f"operator:{operator}")
        if not result.changed:
            self.stdout.write(f"{id} was already reversed; nothing changed")
            return
        refund = f", refunded {result.refund.amount} (entry {result.refund.id})" if result.refund else ""
        self.stdout.write(f"reversed {id}: {result.record.charged_amount} out of its summary{refund}")
