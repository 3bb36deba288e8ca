"""A worker's fold batch charged with set-based SQL on PostgreSQL.

`folding.fold_next_batch` claims and locks summaries as always; this module then charges their
waiting records with a handful of statements instead of record by record in Python: the batch is
copied into a temp table, the allowance is taken in time order by a running sum and each charge
rounded once (the statements bulk ingestion uses), each prepaid wallet pays its share with one
ledger entry, and the records, lines, allowance use and totals are written in bulk.

It applies only where its result is the Python path's by construction: no graduated tiers (they
price a record by what the line charged before it), every rate in the summary's currency, and
every prepaid wallet able to pay its whole share of the batch — charges are never negative, so
then each record, in time order, fits too. Otherwise it returns None before writing anything and
the caller folds the batch in Python (`folding.apply_records`, the reference; tests/test_set_folding.py
runs both on the same records). Per record this costs one UPDATE of the usage row and a few
temp-table rows, against about 80 µs of Python.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from decimal import Decimal

from django.db import connection
from django.utils import timezone

from tarifa.core.pgarrays import array_literal
from tarifa.metering.models import FoldBatch, RateSnapshot, Summary, UsageRecord
from tarifa.metering.selectors import allowances_by_plan, covering_allowance
from tarifa.metering.services.bulk import (
    BILLED_ROWS, PROBING_WAITING_RECORDS, WAITING_OF_CLAIMED, add_to_summaries, allowance_moves, charge_rows,
    local_settings,
)
from tarifa.tenants.models import Customer
from tarifa.wallets.services.charging import PrepaidFunds

ZERO = Decimal(0)
USAGE = UsageRecord._meta.db_table


@dataclass(frozen=True, slots=True)
class LockedSummary:
    """What a set fold reads of a summary it locks (no model instances: building ~700 Summary and
    Customer objects a batch, when records are spread thin, had cost a third of the fold)."""

    id: int
    customer_id: int
    currency: str
    prepaid: bool


@dataclass(frozen=True)
class SetFold:
    batch_id: int
    records: int  # taken from the claimed summaries (all billed)
    read: list[int]  # the claimed summaries it read (locked), a prefix of the claim, ascending
    summary_ids: list[int]  # that billed records, ascending (the last holds the batch's last record)
    charged: Decimal
    moves: list  # (summary, allowance, used before, used after, included) for threshold alerts


class NothingWaiting:
    """fold_claimed_in_sql's answer when the claimed summaries hold no waiting record."""


NOTHING_WAITING = NothingWaiting()


def fold_claimed_in_sql(*, claimed: list[int], batch_size: int, folded_by: str) -> SetFold | NothingWaiting | None:
    """Charge up to `batch_size` waiting records of the `claimed` summaries (ascending ids, whose
    markers the caller holds); None: the batch needs the Python path, and nothing was written;
    NOTHING_WAITING: the claimed summaries, all locked and read, have no record waiting (their
    markers are stale). Runs in the caller's transaction."""
    with connection.cursor() as wrapper:
        cursor = wrapper.cursor
        # Index probes over scans for the batch's reads (summary locks, pending-index probes): with
        # the default random_page_cost (4, for spinning disks) the planner once priced a thousand
        # probes above a scan of the whole usage table, and each batch grew with the table (8 ms
        # at 50k rows, 30 ms at 200k). The hot table lives in memory or on SSD. (The billed UPDATE
        # no longer depends on it: it goes by row address.)
        cursor.execute("SET LOCAL random_page_cost = 1.1")
        cursor.execute("SET LOCAL jit = off")
        summaries, loaded = _load_batch(cursor, claimed=claimed, batch_size=batch_size)
        cursor.execute("SELECT DISTINCT summary_id, snapshot_id, plan_id, rated_kind FROM fold_work")
        groups = cursor.fetchall()
        if not groups:  # _load_batch, finding nothing, locked and read every claimed summary
            return NOTHING_WAITING
        terms = _terms(groups=groups, summaries=summaries)
        if terms is None:
            return None
        # Temp tables get no autovacuum statistics: without these the planner took the batch for
        # one row and charged it by re-running the window query for every row.
        cursor.execute("ANALYZE fold_work (seq, summary_id, snapshot_id, plan_id, rated_kind)")
        charge_rows(cursor, table="fold_work", into="fold_charged", terms=TERMS_RELATION, params=terms)
        cursor.execute("SELECT summary_id, count(*), sum(charged) FROM fold_charged GROUP BY summary_id ORDER BY summary_id")
        per_summary = cursor.fetchall()
        funds = _prepaid_funds(summaries=summaries, per_summary=per_summary)
        if funds is False:
            return None
        records = sum(n for _summary, n, _total in per_summary)
        _Density.records_per_summary = records / len(per_summary)
        charged = sum(total for _summary, _n, total in per_summary)
        batch = FoldBatch.objects.create(record_count=records, charged_amount=charged, folded_by=folded_by,
                                         summary_count=len(per_summary))
        entries = funds.post_debits(batch_id=batch.id, caused_by=folded_by) if funds else {}
        _mark_billed(cursor, count=loaded, batch_id=batch.id, entries={
            summary_id: entries[summaries[summary_id].customer_id] for summary_id, _n, _t in per_summary
            if summaries[summary_id].customer_id in entries})
        moves = allowance_moves(cursor, table="fold_charged")
        add_to_summaries(cursor, table="fold_charged", wallet_paid={
            summary_id: total for summary_id, _n, total in per_summary if summaries[summary_id].customer_id in entries})
    return SetFold(batch.id, records, sorted(summaries), [s for s, _n, _t in per_summary], charged, moves)


def _lock(cursor, ids: list[int]) -> dict[int, LockedSummary]:
    """Lock (FOR NO KEY UPDATE, in id order, as folding.lock_summaries and bulk ingestion lock
    them) and read summaries."""
    cursor.execute(
        f"""SELECT s.id, s.customer_id, s.currency, c.billing_mode = %(prepaid)s
            FROM {Summary._meta.db_table} s JOIN {Customer._meta.db_table} c ON c.id = s.customer_id
            WHERE s.id = ANY(%(ids)s::bigint[]) ORDER BY s.id FOR NO KEY UPDATE OF s""",
        {"ids": array_literal(ids), "prepaid": Customer.BillingMode.PREPAID})
    return {row[0]: LockedSummary(*row) for row in cursor.fetchall()}


def _load_batch(cursor, *, claimed: list[int], batch_size: int) -> tuple[dict[int, LockedSummary], int]:
    """fold_work gets the batch: the claimed summaries' waiting records in processing order, the
    usage id as `seq` (ids grow in arrival order, the tie-break of equal times). Returns the
    summaries read (locked) and how many records were loaded.

    Summaries are locked, then read, in growing groups (doubling) until the batch is full: a
    claim holds ten times more markers than a batch of busy summaries needs, and locking them all
    had cost a fifth of a fold. The first group is sized by the records per summary of this
    process's last batch, so a batch of busy summaries reads about the records it keeps (each
    summary's are read up to what the batch still lacks). Locked first, so a summary's records
    are read after whatever locked it before us (a re-rate, an in-place import fold) has committed."""
    # No price-term columns: charging joins them in from TERMS_RELATION, and writes the charged
    # rows to fold_charged.
    cursor.execute(f"""
        CREATE TEMP TABLE IF NOT EXISTS fold_work (
            seq bigint, tid tid, summary_id bigint, snapshot_id bigint, plan_id bigint, rated_kind text,
            quantity numeric, billable numeric, occurred_at timestamptz) ON COMMIT DELETE ROWS;
        CREATE TEMP TABLE IF NOT EXISTS fold_charged ({BILLED_ROWS}) ON COMMIT DELETE ROWS""")
    # empty unless an earlier fold of this transaction fell back
    cursor.execute("DELETE FROM fold_work; DELETE FROM fold_charged")
    summaries: dict[int, LockedSummary] = {}
    loaded, start, size = 0, 0, _first_group_size(batch_size)
    with local_settings(cursor, PROBING_WAITING_RECORDS):  # what follows sorts (running sums, ORDER BY)
        while loaded < batch_size and start < len(claimed):
            group = claimed[start:start + size]
            summaries.update(_lock(cursor, group))
            # One probe of usage_pending_idx per summary, which gives its records in processing order:
            # a plain `summary_id = ANY(…)` was planned, with stale statistics, as a scan of every
            # waiting record of the table.
            cursor.execute(
                f"""INSERT INTO fold_work (seq, tid, summary_id, snapshot_id, plan_id, rated_kind, quantity,
                                           billable, occurred_at)
                    SELECT u.id, u.ctid, u.summary_id, u.snapshot_id, u.plan_id, u.rated_kind, u.quantity,
                           u.billable_quantity, u.occurred_at
                    FROM unnest(%(ids)s::bigint[]) AS claimed(id)
                    CROSS JOIN LATERAL ({WAITING_OF_CLAIMED.format(columns="ctid, *", limit="%(limit)s")}) u
                    ORDER BY u.summary_id, u.occurred_at, u.id LIMIT %(limit)s""",
                {"ids": array_literal(group), "limit": batch_size - loaded})
            loaded += cursor.rowcount
            start, size = start + size, size * 2
    return summaries, loaded


class _Density:
    """Records per summary in this process's last fold batch (0: none yet); a hint only, so a
    process-wide value shared by a worker's slots is good enough."""

    records_per_summary = 0.0


def claim_size(batch_size: int) -> int:
    """How many summaries a fold claims: enough for a full batch at the records per summary of
    this process's last batch, with a quarter to spare (at least 10, at most a batch); a tenth of
    a batch in a fresh process. Fewer when records are dense, so the other workers find their own;
    more when they are sparse: a fixed tenth had made a busy API's records, folded as they
    arrive (1.4 a summary), batches of ~140 records costing 180 µs a record."""
    if not _Density.records_per_summary:
        return max(10, batch_size // 10)
    return max(10, min(batch_size, math.ceil(batch_size / _Density.records_per_summary * 1.25)))


def _first_group_size(batch_size: int) -> int:
    if not _Density.records_per_summary:
        return 10
    return max(1, math.ceil(batch_size / _Density.records_per_summary))


TERMS_RELATION = """unnest(%(t0)s::bigint[], %(t1)s::bigint[], %(t2)s::text[], %(t3)s::numeric[], %(t4)s::numeric[],
                            %(t5)s::integer[], %(t6)s::text[], %(t7)s::text[], %(t8)s::bigint[], %(t9)s::numeric[])
    AS t(snapshot_id, plan_id, rated_kind, price, block_size, places, rounding, unit, allowance_id, included)"""


def _terms(*, groups, summaries: dict[int, LockedSummary]) -> dict[str, str] | None:
    """Each (snapshot, plan, kind) of the batch with its price terms and allowance, as the array
    literals of TERMS_RELATION; None when a rate is tiered or in another currency than its
    summary (the Python path handles those)."""
    snapshots = dict(RateSnapshot.objects.filter(id__in={g[1] for g in groups}).values_list("id", "data"))
    allowances = allowances_by_plan(plan_ids={g[2] for g in groups})
    keys = {}
    for summary_id, snapshot_id, plan_id, rated_kind in groups:
        data = snapshots[snapshot_id]
        if data.get("tiers") or data["currency"] != summaries[summary_id].currency:
            return None
        allowance = covering_allowance(allowances.get(plan_id, []), rated_kind)
        keys[(snapshot_id, plan_id, rated_kind)] = (data, allowance)
    rows = [(s, p, k, d["price"], d["block_size"], int(d["places"]), d["rounding"], d["unit"],
             a.id if a else None, a.quantity if a else None) for (s, p, k), (d, a) in keys.items()]
    return {f"t{i}": array_literal(column) for i, column in enumerate(zip(*rows))}


def _prepaid_funds(*, summaries: dict[int, LockedSummary], per_summary) -> PrepaidFunds | None | bool:
    """Lock the prepaid customers' wallets and take each summary's share (in summary order, as the
    Python path takes them); False when some wallet cannot pay its whole share, None when no
    customer of the batch is prepaid."""
    prepaid = [(summaries[summary_id], count, total) for summary_id, count, total in per_summary
               if summaries[summary_id].prepaid]
    if not prepaid:
        return None
    funds = PrepaidFunds(customer_ids={summary.customer_id for summary, _n, _t in prepaid})
    for summary, count, total in prepaid:
        if funds.refusal(customer_id=summary.customer_id, amount=total, currency=summary.currency):
            return False
        funds.take(customer_id=summary.customer_id, amount=total, count=count)
    return funds


def _mark_billed(cursor, *, count: int, batch_id: int, entries: dict[int, int]) -> None:
    """The usage rows become billed with their charge, allowance use and (prepaid) ledger entry.
    Each is found by the row address read when the batch was loaded (a TID scan, no index probe):
    the rows cannot move meanwhile, as whatever changes a waiting record holds its summary's lock,
    which this transaction has; the id is checked too, and the count."""
    cursor.execute(
        f"""UPDATE {USAGE} u SET status = 'billed', batch_id = %s, allowance_used = w.covered,
                charged_amount = w.charged, billed_at = %s, unrated_reason = '', failure_code = '', amount_due = NULL,
                wallet_entry_id = coalesce((%s::bigint[])[array_position(%s::bigint[], w.summary_id)],
                                           u.wallet_entry_id)
            FROM fold_charged w
            WHERE u.ctid = w.tid AND u.id = w.seq""",
        # The entry by array lookup, not a join: a join to an unnest() of the pairs was planned as a
        # nested loop that evaluated the unnest() again for every row (22 ms of a 48 ms UPDATE at
        # 50 summaries a batch).
        [batch_id, timezone.now(), array_literal(entries.values()), array_literal(entries)])
    if cursor.rowcount != count:
        raise RuntimeError(f"fold batch {batch_id}: {cursor.rowcount} of {count} usage rows found to mark billed")
