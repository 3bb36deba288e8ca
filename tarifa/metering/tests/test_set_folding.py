"""The workers' set-based fold on PostgreSQL (`services/set_folding.py`) against the Python fold.

Two tenants with identical plans, customers and wallets receive the same records (stored and
rated the same way, left waiting); one is folded with TARIFA_FOLD_IN_SQL off (the Python path,
the reference), the other with it on, in the same batches. Records, summaries, allowance use,
ledgers and balances must agree. Batches with tiered rates or a wallet short of its share fall
back to Python, so the random cases also check that the choice is made per batch correctly.
"""

from __future__ import annotations

import copy
from datetime import datetime
from decimal import Decimal

import pytest
from django.test import override_settings

from tarifa.metering.models import FoldBatch, Summary, UsageRecord
from tarifa.metering.services import set_folding
from tarifa.metering.services.folding import fold_all_pending
from tarifa.metering.services.importing import import_usage
from tarifa.metering.services.ingestion import ingest_in_python
from tarifa.metering.services.reconciliation import find_differences
from tarifa.metering.tests.test_bulk import (
    SAO_PAULO, _balances_of, _records_of, _summaries_of, call, chunks_of, differential_examples, make_tenant,
    rolled_back,
)
from tarifa.wallets.models import LedgerEntry
from tarifa.wallets.services.reconciliation import find_wallet_differences


def _ledger_of(tenant) -> list:
    return sorted((e.wallet.customer.external_id, e.kind, e.amount, e.balance_after, e.record_count)
                  for e in LedgerEntry.objects.filter(wallet__tenant=tenant).select_related("wallet__customer"))


def _links_of(tenant) -> dict:
    """Per billed record, the (kind, amount) of the ledger entry that paid it."""
    return {r.external_id: r.wallet_entry and (r.wallet_entry.kind, r.wallet_entry.amount)
            for r in UsageRecord.objects.filter(tenant=tenant, status="billed").select_related("wallet_entry")}


def _fold(tenant, *, in_sql: bool, batch: int) -> None:
    with override_settings(TARIFA_FOLD_IN_SQL=in_sql):
        fold_all_pending(batch_size=batch, folded_by="test",
                         summary_ids=list(Summary.objects.filter(tenant=tenant).values_list("id", flat=True)))


def fold_both_ways(chunks: list[list[dict]], *, batch: int) -> None:
    ref, sql = make_tenant("py"), make_tenant("sql")
    for chunk in chunks:
        for tenant, in_sql in ((ref, False), (sql, True)):
            ingest_in_python(tenant=tenant, records=copy.deepcopy(chunk))  # rated alike, left waiting
            _fold(tenant, in_sql=in_sql, batch=batch)
    assert _records_of(sql) == _records_of(ref)
    assert _summaries_of(sql) == _summaries_of(ref)
    assert _balances_of(sql) == _balances_of(ref)
    assert _ledger_of(sql) == _ledger_of(ref)
    assert _links_of(sql) == _links_of(ref)
    for tenant in (ref, sql):
        assert find_differences(tenant=tenant) == []
        assert find_wallet_differences(tenant=tenant) == []


@differential_examples
def test_set_based_fold_matches_the_python_fold(postgres, records, cuts, batch):
    with rolled_back():
        fold_both_ways(chunks_of(records, cuts), batch=batch)


def test_prepaid_batches_fold_in_sql_until_a_wallet_falls_short(postgres, monkeypatch):
    """c4 is prepaid with 3.00 and a credit limit of 1.00. Batches its wallet can pay are folded in
    SQL (one debit each, linked to every record); the batch it cannot pay in full falls back to
    Python, which charges what fits in time order and fails the rest."""
    used = []
    original = set_folding.fold_claimed_in_sql

    def spy(**kwargs):
        result = original(**kwargs)
        used.append(result is not None)
        return result

    monkeypatch.setattr("tarifa.metering.services.folding.fold_claimed_in_sql", spy)
    covered = call("p0", 600, 2, customer="c4", destination="987654321")  # within the allowance: 0.00
    later = [call(f"q{i}", 600, 10 + i, customer="c4", destination="987654321") for i in range(4)]  # 3.30 each
    fold_both_ways([[covered], later[:1], later[1:]], batch=1000)
    assert used == [True, True, False]  # the last batch needs 9.90 of the 0.70 (+ credit) left: Python
    status = dict(UsageRecord.objects.filter(tenant__slug="sql").values_list("external_id", "status"))
    assert [status[i] for i in ("p0", "q0", "q1", "q2", "q3")] == ["billed", "billed", "failed", "failed", "failed"]
    debits = LedgerEntry.objects.filter(wallet__tenant__slug="sql", kind="usage_debit").order_by("id")
    assert [(e.amount, e.record_count) for e in debits] == [(Decimal("0.00"), 1), (Decimal("-3.30"), 1)]
    assert Summary.objects.get(tenant__slug="sql", customer__external_id="c4").wallet_paid_amount == Decimal("3.30")
    q0 = UsageRecord.objects.get(tenant__slug="sql", external_id="q0")
    assert q0.wallet_entry_id == debits[1].id and q0.batch_id == FoldBatch.objects.get(pk=q0.batch_id).id


def test_sql_fold_carries_allowance_across_batches_and_kinds(postgres):
    """The minutes allowance (600 s over call.local and call.mobile) is consumed in time order
    across both kinds and across batches of 2, and the threshold alerts fire the same way."""
    records = [call("m1", 300, 3, destination="987654321"), call("l1", 210, 1), call("l2", 210, 2),
               call("m2", 90, 4, destination="987654321"), call("l3", 61, 5)]
    fold_both_ways([records], batch=2)
    used = dict(UsageRecord.objects.filter(tenant__slug="sql").values_list("external_id", "allowance_used"))
    assert [used[i] for i in ("l1", "l2", "m1", "m2", "l3")] == [210, 210, 180, 0, 0]
    assert Summary.objects.get(tenant__slug="sql").record_count == 5


def test_a_batch_locks_only_the_summaries_it_reaches_and_keeps_the_others_waiting(postgres, monkeypatch):
    """Twelve summaries (one customer's months) with 2 waiting records each, claimed together.
    Summaries are locked and read in doubling groups until the batch is full, the first of 10 in
    a fresh process: a batch of 3 locks the first ten only and, being full, keeps the markers from
    its last summary on (that one may hold more). It took 3 records from 2 summaries, so the next
    batch of 200 (which, at 1.5 records a summary, claims up to 167) starts with a group of 134,
    takes the other 21 from the 11 left in one group and drains them."""
    from tarifa.metering.models import PendingSummary
    from tarifa.metering.services.folding import fold_next_batch

    tenant = make_tenant("reach")
    ingest_in_python(tenant=tenant, records=[
        {"id": f"m{month}-{n}", "customer": "c1", "kind": "call", "quantity": 60, "destination": "33334444",
         "occurred_at": datetime(2025, month, 10 + n, 10, tzinfo=SAO_PAULO).isoformat()}
        for month in range(1, 13) for n in range(2)])
    ids = list(Summary.objects.filter(tenant=tenant).order_by("period").values_list("id", flat=True))
    assert ids == sorted(ids) and len(ids) == 12  # claimed in month order
    locked = []
    original = set_folding._lock
    monkeypatch.setattr(set_folding, "_lock", lambda cursor, group: locked.append(list(group)) or original(cursor, group))
    monkeypatch.setattr(set_folding._Density, "records_per_summary", 0.0)  # as in a fresh process

    def waiting() -> set[str]:
        return set(UsageRecord.objects.filter(tenant=tenant, status="rated").values_list("external_id", flat=True))

    def marked() -> list[int]:
        return sorted(PendingSummary.objects.values_list("summary_id", flat=True))

    assert fold_next_batch(batch_size=3, folded_by="test").records == 3
    assert locked == [ids[:10]] and {"m1-0", "m1-1", "m2-0"}.isdisjoint(waiting()) and len(waiting()) == 21
    assert marked() == ids[1:]
    assert set_folding._first_group_size(200) == 134 and set_folding.claim_size(200) == 167
    assert fold_next_batch(batch_size=200, folded_by="test").records == 21
    assert locked[1:] == [ids[1:]] and not waiting() and not marked()
    assert fold_next_batch(batch_size=200, folded_by="test").batches == 0
    assert find_differences(tenant=tenant) == []


def test_records_spread_thin_are_claimed_a_full_batch_at_a_time(postgres, monkeypatch):
    """24 summaries (the months of 2025 of two customers) with one waiting record each. A fresh
    process claims a tenth of a batch of 20, i.e. the minimum of 10 summaries, and folds their 10
    records; having seen one record a summary, the next claim is sized for a full batch (20) and
    takes the 14 left in one batch, where a fixed tenth would have needed two more."""
    from tarifa.metering.services.folding import fold_next_batch

    tenant = make_tenant("thin")
    ingest_in_python(tenant=tenant, records=[
        {"id": f"{customer}-m{month}", "customer": customer, "kind": "call", "quantity": 60,
         "destination": "33334444", "occurred_at": datetime(2025, month, 10, 10, tzinfo=SAO_PAULO).isoformat()}
        for customer in ("c1", "c2") for month in range(1, 13)])
    monkeypatch.setattr(set_folding._Density, "records_per_summary", 0.0)  # as in a fresh process
    assert set_folding.claim_size(20) == 10
    assert fold_next_batch(batch_size=20, folded_by="test").records == 10
    assert set_folding._Density.records_per_summary == 1.0 and set_folding.claim_size(20) == 20
    assert fold_next_batch(batch_size=20, folded_by="test").records == 14
    assert fold_next_batch(batch_size=20, folded_by="test").batches == 0
    assert not UsageRecord.objects.filter(tenant=tenant, status="rated").exists()
    assert find_differences(tenant=tenant) == []


def _waiting_under_stale_statistics(tenant) -> None:
    """2,000 records of c1 and c2 waiting, under statistics taken when nothing waited (autovacuum
    after the workers caught up), which say that status = 'rated' matches no row and that both
    partial indexes are empty; and the waiting index a level deeper than the compact status index
    (a busy day's folded entries, not yet vacuumed). The planner then preferred the status index
    to read a summary's waiting records: every waiting record of the table, per summary."""
    from django.db import connection

    ingest_in_python(tenant=tenant, records=[call(f"old-{n}", 60, 1 + n % 28) for n in range(200)])
    fold_all_pending(batch_size=1000)
    with connection.cursor() as cursor:
        cursor.execute("VACUUM (ANALYZE) metering_usagerecord")  # nothing waits now
        # A day's folding since: 150k records that waited and were billed, whose entries stay in
        # the waiting index until the next vacuum (copies of a billed record: only the index counts).
        cursor.execute("""
            INSERT INTO metering_usagerecord (tenant_id, external_id, content_hash, ingest_token, customer_ref,
                customer_id, kind, quantity, occurred_at, period, destination, attributes, received_at, status,
                unrated_reason, plan_id, rated_kind, billable_quantity, snapshot_id, summary_id, failure_code,
                reversal_reason)
            SELECT u.tenant_id, 'day-' || n, u.content_hash, u.ingest_token, u.customer_ref, u.customer_id, u.kind,
                   u.quantity, u.occurred_at + n * interval '1 second', u.period, u.destination, u.attributes,
                   u.received_at, 'rated', '', u.plan_id, u.rated_kind, u.billable_quantity, u.snapshot_id,
                   u.summary_id, '', ''
            FROM (SELECT * FROM metering_usagerecord LIMIT 1) u CROSS JOIN generate_series(1, 150000) n""")
        cursor.execute("UPDATE metering_usagerecord SET status = 'billed' WHERE external_id LIKE 'day-%'")
    for start in range(0, 2000, 1000):
        ingest_in_python(tenant=tenant, records=[call(f"new-{n}", 60, 1 + n % 28, customer=("c1", "c2")[n % 2])
                                                 for n in range(start, start + 1000)])


def _plans_while(action) -> list[str]:
    """The plans of the statements `action` runs, as auto_explain sends them (notices)."""
    from django.db import connection

    plans: list[str] = []
    connection.ensure_connection()
    connection.connection.add_notice_handler(lambda notice: plans.append(notice.message_primary or ""))
    with connection.cursor() as cursor:
        cursor.execute("LOAD 'auto_explain'; SET auto_explain.log_min_duration = 0; SET client_min_messages = log")
    try:
        action()
    finally:
        with connection.cursor() as cursor:
            cursor.execute("SET auto_explain.log_min_duration = -1; RESET client_min_messages")
    return plans


def _read_through_the_waiting_index(plans: list[str], statement: str) -> bool:
    reads = [plan for plan in plans if statement in plan]
    return bool(reads) and all("usage_pending_idx" in plan and "usage_status_idx" not in plan for plan in reads)


@pytest.mark.django_db(transaction=True)
def test_a_fold_reads_its_batch_through_the_waiting_index_whatever_the_statistics_say(postgres):
    """The status index had been read per claimed summary (400 ms a summary with 265k waiting),
    so a burst of API usage was folded ever more slowly."""
    from tarifa.metering.services.folding import fold_next_batch

    _waiting_under_stale_statistics(make_tenant("stats"))
    plans = _plans_while(lambda: fold_next_batch(batch_size=1000, folded_by="test"))
    assert _read_through_the_waiting_index(plans, "Insert on fold_work"), plans
    assert UsageRecord.objects.filter(status="billed", external_id__startswith="new-").count() == 1000


@pytest.mark.django_db(transaction=True)
def test_the_python_fold_reads_its_batch_through_the_waiting_index_too(postgres):
    """Batches with graduated tiers or a wallet short of its share are folded in Python; their
    read, one `summary_id = ANY(…) AND status = 'rated'` query, had scanned every waiting record
    of the table through the status index, once a batch."""
    from tarifa.metering.services.folding import fold_next_batch

    _waiting_under_stale_statistics(make_tenant("stats"))
    with override_settings(TARIFA_FOLD_IN_SQL=False):
        plans = _plans_while(lambda: fold_next_batch(batch_size=1000, folded_by="test"))
    assert _read_through_the_waiting_index(plans, "SELECT w.id FROM unnest"), plans
    assert not [plan for plan in plans if "usage_status_idx" in plan], plans
    assert UsageRecord.objects.filter(status="billed", external_id__startswith="new-").count() == 1000


@pytest.mark.django_db(transaction=True)
def test_an_import_finds_summaries_with_waiting_usage_through_the_waiting_index(postgres):
    """An import chunk leaves to the workers the summaries that have records waiting; finding
    them had read every waiting record of the table, once a chunk."""
    from django.db import transaction

    _waiting_under_stale_statistics(tenant := make_tenant("stats"))
    records = [call("file-1", 60, 2),
               {**call("file-2", 60, 3), "occurred_at": datetime(2025, 11, 3, 10, tzinfo=SAO_PAULO)}]

    def run_import():
        with transaction.atomic():  # on this connection (the one explained), not the import's own
            import_usage(tenant=tenant, records=records)

    plans = _plans_while(run_import)
    assert _read_through_the_waiting_index(plans, "SELECT claimed.id FROM unnest"), plans
    status = dict(UsageRecord.objects.filter(external_id__startswith="file-").values_list("external_id", "status"))
    assert status == {"file-1": "rated", "file-2": "billed"}  # c1's December has records waiting
