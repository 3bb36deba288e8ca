"""Folding and ingestion under real concurrency on PostgreSQL."""

from __future__ import annotations

import threading
from collections import Counter

import pytest
from django.db import DatabaseError, connection, transaction
from django.db.models import Sum
from django.test import override_settings

from tarifa.metering.models import FoldBatch, Summary, UsageRecord
from tarifa.metering.services import ingestion
from tarifa.metering.services.folding import fold_all_pending
from tarifa.metering.services.ingestion import ingest_usage
from tarifa.metering.services.reconciliation import find_differences, rerate_period
from tarifa.metering.tests.conftest import at, call, fold_with_a_worker_killed
from tarifa.runtime.services import enqueue
from tarifa.runtime.testing import run_in_threads, wait_until_a_session_waits_for_a_lock

pytestmark = pytest.mark.django_db(transaction=True)


def test_four_folding_workers_with_one_killed_bill_every_record_once(postgres, customers, tmp_path,
                                                                     api_usage_waits_for_the_workers):
    tenant = customers[0].tenant
    total = 0
    for customer in customers:
        records = [call(f"{customer.external_id}-{i}", customer.external_id, 20 + i % 300, at(1 + i % 28, i % 600),
                        "987654321" if i % 3 else "33334444") for i in range(1500)]
        total += ingest_usage(tenant=tenant, records=records).counts["accepted"]
    assert total == 4500
    for customer in customers:  # several fold jobs per summary: workers contend for the same rows
        for _ in range(4):
            enqueue("metering.fold", payload={"customer_id": customer.id, "period": "2025-12"})
    fold_with_a_worker_killed(tmp_path, batch_size=40, started_after=400)
    assert UsageRecord.objects.filter(status="billed").count() == 4500
    # Exactly once: every record points at one batch, and the batches count each record once.
    assert FoldBatch.objects.aggregate(n=Sum("record_count"))["n"] == 4500
    per_batch = Counter(UsageRecord.objects.values_list("batch_id", flat=True))
    assert {b.id: b.record_count for b in FoldBatch.objects.all()} == dict(per_batch)
    for summary in Summary.objects.all():
        assert summary.record_count == 1500
    assert find_differences() == []
    # Same result as one worker folding everything in time order: re-fold from scratch and compare.
    # (The allowance is shared by kinds with different prices, so any out-of-order fold would show.)
    concurrent_totals = dict(Summary.objects.values_list("id", "total_amount"))
    concurrent_charges = dict(UsageRecord.objects.values_list("id", "charged_amount"))
    rerate_period(tenant=tenant, period="2025-12")
    assert dict(Summary.objects.values_list("id", "total_amount")) == concurrent_totals
    assert dict(UsageRecord.objects.values_list("id", "charged_amount")) == concurrent_charges


def test_the_same_records_sent_concurrently_are_stored_once(postgres, customers):
    tenant = customers[0].tenant
    records = [call(f"dup-{i}", "c1", 30, at(1, i)) for i in range(300)]
    outcomes = run_in_threads(
        lambda _i: Counter((r.id, r.status) for r in ingest_usage(tenant=tenant, records=records).results), 4)
    assert UsageRecord.objects.count() == 300
    merged = sum(outcomes, Counter())
    for i in range(300):
        assert merged[(f"dup-{i}", "accepted")] == 1  # exactly one sender stored it
        assert merged[(f"dup-{i}", "duplicate")] == 3
    fold_all_pending(batch_size=1000)  # whatever the calls left to the workers
    assert Summary.objects.get().record_count == 300
    assert find_differences() == []


def test_calls_charging_the_same_summaries_beside_a_fold_bill_every_record_once(postgres, customers):
    """API calls fold in place, taking turns on the summaries they share, while a worker folds
    what waits (c1's summary, at first); every record ends billed exactly once."""
    tenant = customers[0].tenant
    with override_settings(TARIFA_API_FOLD_IN_PLACE=False):
        ingest_usage(tenant=tenant, records=[call(f"waiting-{k}", "c1", 40, at(1, k)) for k in range(200)])

    def send_or_fold(index: int) -> int:
        if index == 4:  # the worker
            return sum(fold_all_pending(batch_size=25).records for _ in range(5))
        accepted = 0
        for n in range(5):
            records = [call(f"t{index}-{n}-{k}", f"c{1 + k % 3}", 20 + k, at(1 + (index + n + k) % 28, k))
                       for k in range(60)]
            accepted += ingest_usage(tenant=tenant, records=records).counts["accepted"]
        return accepted

    assert sum(run_in_threads(send_or_fold, 5)[:4]) == 1200
    fold_all_pending(batch_size=1000)
    assert UsageRecord.objects.filter(status="billed").count() == 1400
    per_batch = Counter(UsageRecord.objects.values_list("batch_id", flat=True))
    assert {b.id: b.record_count for b in FoldBatch.objects.all()} == dict(per_batch)
    assert {b.folded_by for b in FoldBatch.objects.all()} >= {"api"}
    assert sum(Summary.objects.values_list("record_count", flat=True)) == 1400
    assert find_differences() == []


def test_a_call_leaves_its_usage_to_the_workers_rather_than_wait_long_for_a_summary(postgres, customers, monkeypatch):
    """A re-rate holds a period's summaries while it runs: a call folding in place waits for one
    at most ingestion.API_FOLD_LOCK_WAIT, then stores its records for the workers."""
    tenant = customers[0].tenant
    ingest_usage(tenant=tenant, records=[call("first", "c1", 60, at(1))])  # c1's summary now exists
    monkeypatch.setattr(ingestion, "API_FOLD_LOCK_WAIT", "100ms")
    locked, release = threading.Event(), threading.Event()

    def hold_the_summary() -> None:
        with transaction.atomic():
            list(Summary.objects.select_for_update(no_key=True).filter(customer__external_id="c1"))  # as re-rates lock
            locked.set()
            release.wait(30)  # the call below would have waited for this, and found the summary free
        connection.close()

    holder = threading.Thread(target=hold_the_summary)
    holder.start()
    try:
        assert locked.wait(30)
        answers = ingest_usage(tenant=tenant, records=[call("second", "c1", 60, at(2)), call("other", "c2", 60, at(2))])
    finally:
        release.set()
        holder.join(30)
    assert answers.counts["accepted"] == 2
    assert dict(UsageRecord.objects.values_list("external_id", "status")) == {
        "first": "billed", "second": "rated", "other": "rated"}
    fold_all_pending(batch_size=1000)
    assert set(UsageRecord.objects.values_list("status", flat=True)) == {"billed"}
    assert find_differences() == []


def test_churning_tables_are_vacuumed_early_on_postgres(postgres):
    with connection.cursor() as cursor:
        cursor.execute("SELECT relname, reloptions FROM pg_class WHERE relname IN "
                       "('metering_usagerecord', 'metering_pendingsummary', 'runtime_job')")
        options = dict(cursor.fetchall())
    assert set(options) == {"metering_usagerecord", "metering_pendingsummary", "runtime_job"}
    for table, reloptions in options.items():
        assert "autovacuum_vacuum_scale_factor=0.01" in reloptions, table
        assert "autovacuum_analyze_scale_factor=0.005" in reloptions, table


def test_tables_every_fold_rewrites_leave_room_for_hot_updates_on_postgres(postgres):
    tables = ("metering_summary", "metering_summaryline", "metering_allowanceusage", "wallets_wallet")
    with connection.cursor() as cursor:
        cursor.execute("SELECT relname, reloptions FROM pg_class WHERE relname = ANY(%s)", [list(tables)])
        options = dict(cursor.fetchall())
        # Their unique constraints lead with the foreign key, so it has no index of its own.
        cursor.execute("SELECT indexdef FROM pg_indexes WHERE tablename = ANY(%s)", [list(tables[:3])])
        indexes = [row[0] for row in cursor.fetchall()]
    assert set(options) == set(tables)
    for table, reloptions in options.items():
        assert "fillfactor=50" in reloptions, table
    assert not [i for i in indexes if i.endswith("(summary_id)") or i.endswith("(customer_id)")], indexes


def test_a_rerate_and_a_call_charging_the_same_summary_lose_nothing(postgres, customers, monkeypatch):
    """A call folds c1's usage while a re-rate of c1's period runs. The re-rate had read the
    period's records before locking the summary: the call folded a record into the summary in
    between, and the re-rate rebuilt the summary without it (reconcile: a difference). The
    summary is now locked first, so the call leaves its record to the workers, and the re-rate
    keeps the marker that tells them."""
    from tarifa.metering.services import reconciliation

    tenant = customers[0].tenant
    ingest_usage(tenant=tenant, records=[call("first", "c1", 60, at(1))])
    monkeypatch.setattr(ingestion, "API_FOLD_LOCK_WAIT", "100ms")
    rerate = reconciliation.rerate_records
    answers = []

    def rerate_with_a_call_beside(*, tenant, records):
        if records:  # c1's records, read: a call comes in now
            sender = threading.Thread(target=lambda: (
                answers.append(ingest_usage(tenant=tenant, records=[call("second", "c1", 60, at(2))])),
                connection.close()))
            sender.start()
            sender.join(30)
        return rerate(tenant=tenant, records=records)

    monkeypatch.setattr(reconciliation, "rerate_records", rerate_with_a_call_beside)
    rerate_period(tenant=tenant, period="2025-12")
    assert answers and answers[0].counts["accepted"] == 1
    assert find_differences() == []
    fold_all_pending(batch_size=1000)
    assert dict(UsageRecord.objects.values_list("external_id", "status")) == {"first": "billed", "second": "billed"}
    assert Summary.objects.get(customer__external_id="c1").record_count == 2
    assert find_differences() == []


def test_a_reversal_takes_the_summary_before_the_record(postgres, customers):
    """A re-rate (like a fold or a call) locks the summary, then its records. A reversal had
    locked the record first: the two could each hold what the other waits for (a deadlock). While
    a reversal waits for the summary, it now holds nothing of the record."""
    from tarifa.metering.services.reversal import reverse_usage

    tenant = customers[0].tenant
    ingest_usage(tenant=tenant, records=[call("r1", "c1", 60, at(1))])
    record = UsageRecord.objects.get(external_id="r1")
    locked, release = threading.Event(), threading.Event()

    def hold_the_summary() -> None:
        with transaction.atomic():
            list(Summary.objects.select_for_update(no_key=True).filter(pk=record.summary_id))
            locked.set()
            release.wait(30)
        connection.close()

    def reverse() -> None:
        reverse_usage(tenant=tenant, external_id="r1", reason="test", caused_by="test")
        connection.close()

    holder, reverser = threading.Thread(target=hold_the_summary), threading.Thread(target=reverse)
    holder.start()
    try:
        assert locked.wait(30)
        reverser.start()
        wait_until_a_session_waits_for_a_lock()  # the reversal, for the summary
        with transaction.atomic(), connection.cursor() as cursor:  # the record is free meanwhile
            try:
                cursor.execute("SELECT id FROM metering_usagerecord WHERE id = %s FOR UPDATE NOWAIT", [record.id])
            except DatabaseError as error:
                raise AssertionError(f"the waiting reversal holds the record: {error!r}") from error
    finally:
        release.set()
        holder.join(30)
        reverser.join(30)
    assert UsageRecord.objects.get(pk=record.pk).status == "reversed"
    assert find_differences() == []


def test_a_rerate_beside_a_worker_folding_the_same_summary_does_not_deadlock(postgres, customers, monkeypatch):
    """A worker folds c1's waiting record while a re-rate of c1's period runs. The re-rate had
    locked the records, then the summary, then deleted the markers: a worker between those held
    the summary or the marker the re-rate waited for, and waited for the re-rate's records (a
    deadlock: one of them failed). Now the re-rate locks the summary first and skips a marker
    that a worker holds; the worker, once it has the summary, finds nothing left to fold."""
    from tarifa.metering.models import PendingSummary
    from tarifa.metering.services import reconciliation
    from tarifa.metering.services.folding import fold_next_batch

    tenant = customers[0].tenant
    with override_settings(TARIFA_API_FOLD_IN_PLACE=False):
        ingest_usage(tenant=tenant, records=[call("waiting", "c1", 60, at(1))])
    failures = []

    def worker() -> None:
        try:
            fold_next_batch(batch_size=1000, folded_by="worker")
        except Exception as error:  # psycopg's own errors too: the set fold uses its cursor
            failures.append(error)
        finally:
            connection.close()

    rerate = reconciliation.rerate_records
    thread = threading.Thread(target=worker)

    def rerate_beside_a_worker(*, tenant, records):
        if records and not thread.is_alive():
            thread.start()
            wait_until_a_session_waits_for_a_lock()
        return rerate(tenant=tenant, records=records)

    monkeypatch.setattr(reconciliation, "rerate_records", rerate_beside_a_worker)
    rerate_period(tenant=tenant, period="2025-12")
    thread.join(30)
    assert failures == []
    assert UsageRecord.objects.get().status == "billed"
    fold_all_pending(batch_size=1000)  # a marker left behind: nothing waits, it is dropped
    assert not PendingSummary.objects.exists()
    assert find_differences() == []
