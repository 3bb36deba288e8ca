"""Prepaid wallet benchmark on PostgreSQL: token usage charged against 1,000 wallets, and one hot wallet.

Measures, in one run:
  1. 200,000 token-usage records across 1,000 prepaid customers: stored and rated (in-process
     ingestion, batches of 5,000), then folded and debited by 2 workers; prints the charging rate
     (first to last fold batch) and the end-to-end rate (ingest + charge);
  2. the hot wallet: 50,000 records of one customer charged by 4 workers, then proves no debit was
     lost or doubled (debits == charges, balance == ledger, reconcile clean);
  3. the naive baseline (one transaction per record: lock the wallet, debit it, write the ledger
     entry, add to the summary, mark the record) on a 10,000-record sample, and the ratio.

    .venv/bin/python bench/wallets.py
    .venv/bin/python bench/wallets.py --records 50000 --hot-records 20000
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import time
from datetime import date, datetime, timedelta
from decimal import Decimal
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from usage import setup_django, start_workers, stop  # noqa: E402  (bench/usage.py)

DEFAULT_URL = "postgres://postgres@127.0.0.1:5432/tarifa_bench_wallets"
MODELS = ["gpt-4o", "gpt-4o-mini", "claude-sonnet"]


def create_prepaid_tenant(slug: str, customers: int):
    from tarifa.metering.services.plans import create_plan, subscribe
    from tarifa.tenants.models import Customer
    from tarifa.tenants.services import create_tenant
    from tarifa.wallets.models import LedgerEntry, Wallet

    tenant, _issued = create_tenant(name=slug, slug=slug)
    plan = create_plan(tenant=tenant, code="ai", name="AI", rates=[
        {"kind": "llm.input_tokens", "unit": "token", "price": "2.50", "block_size": "1000000"},
        {"kind": "llm.input_tokens", "destination_prefix": "gpt-4o-mini", "unit": "token", "price": "0.15",
         "block_size": "1000000", "rounding": "half_up"},
        {"kind": "llm.output_tokens", "unit": "token", "price": "10.00", "block_size": "1000000"},
    ], currency_places=6)
    Customer.objects.bulk_create([Customer(tenant=tenant, external_id=f"org-{i:04d}", billing_mode="prepaid")
                                  for i in range(customers)])
    rows = list(Customer.objects.filter(tenant=tenant))
    for customer in rows:
        subscribe(customer=customer, plan=plan, starts_on=date(2025, 1, 1))
    wallets = Wallet.objects.bulk_create([Wallet(tenant=tenant, customer=c, unit="BRL", balance=Decimal(100_000))
                                          for c in rows])
    LedgerEntry.objects.bulk_create([LedgerEntry(wallet=w, kind="top_up", amount=w.balance, balance_after=w.balance,
                                                 caused_by="bench", idempotency_key="top_up:initial")
                                     for w in wallets])
    return tenant


def token_records(count: int, customers: int, *, prefix: str, seed: int):
    rng = random.Random(seed)
    start = datetime(2025, 12, 1, tzinfo=__import__("zoneinfo").ZoneInfo("America/Sao_Paulo"))
    for n in range(count):
        yield {"id": f"{prefix}{n}", "customer": f"org-{rng.randrange(customers):04d}",
               "kind": rng.choice(["llm.input_tokens", "llm.output_tokens"]), "quantity": rng.randrange(50, 4000),
               "occurred_at": (start + timedelta(seconds=rng.randrange(2_500_000))).isoformat(),
               "attributes": {"model": rng.choice(MODELS)}}


def ingest(tenant, records, batch: int = 5000) -> float:
    from tarifa.metering.services.ingestion import ingest_usage

    t0 = time.perf_counter()
    chunk = []
    for record in records:
        chunk.append(record)
        if len(chunk) == batch:
            ingest_usage(tenant=tenant, records=chunk)
            chunk = []
    if chunk:
        ingest_usage(tenant=tenant, records=chunk)
    return time.perf_counter() - t0


def charge(url: str, tenant, workers: int) -> dict:
    """Start workers on the waiting records; the rate is over first→last fold batch."""
    from django.db.models import Max, Min

    from tarifa.metering.models import FoldBatch, UsageRecord
    from tarifa.runtime.services import enqueue

    first_batch = FoldBatch.objects.aggregate(m=Max("id"))["m"] or 0
    for _ in range(workers * 2):
        enqueue("metering.fold")
    t0 = time.perf_counter()
    processes = start_workers(url, workers)
    try:
        while UsageRecord.objects.filter(tenant=tenant, status="rated").exists():
            time.sleep(0.1)
    finally:
        stop(processes)
    wall = time.perf_counter() - t0
    batches = FoldBatch.objects.filter(id__gt=first_batch)
    window = batches.aggregate(a=Min("created_at"), b=Max("created_at"))
    charged = UsageRecord.objects.filter(tenant=tenant, status="billed").count()
    seconds = max((window["b"] - window["a"]).total_seconds(), 1e-6)
    return {"records": charged, "seconds": seconds, "rate": charged / seconds, "wall": wall}


def verify(tenant) -> dict:
    from django.db.models import Sum

    from tarifa.metering.models import UsageRecord
    from tarifa.metering.services.reconciliation import find_differences
    from tarifa.wallets.models import LedgerEntry
    from tarifa.wallets.services.reconciliation import find_wallet_differences

    charged = UsageRecord.objects.filter(tenant=tenant, status="billed").aggregate(s=Sum("charged_amount"))["s"]
    debited = -LedgerEntry.objects.filter(wallet__tenant=tenant, kind="usage_debit").aggregate(s=Sum("amount"))["s"]
    unlinked = UsageRecord.objects.filter(tenant=tenant, status="billed", charged_amount__gt=0,
                                          wallet_entry__isnull=True).count()
    return {"charged": charged, "debited": debited, "unlinked": unlinked,
            "wallet_differences": len(find_wallet_differences(tenant=tenant)),
            "summary_differences": len(find_differences(tenant=tenant))}


def bench_naive(sample: int) -> dict:
    """One transaction per record: lock the wallet, check and debit it, write the ledger entry, add
    the charge to the summary, mark the record charged (the seed's per-message flow)."""
    from django.db import transaction
    from django.db.models import F

    from tarifa.metering.models import RateSnapshot, Summary, SummaryLine, UsageRecord
    from tarifa.metering.pricing import terms_of
    from tarifa.metering.rating import charge as price
    from tarifa.wallets.models import LedgerEntry, Wallet

    tenant = create_prepaid_tenant("bench-naive", 100)
    ingest(tenant, token_records(sample, 100, prefix="naive-", seed=3))
    ids = list(UsageRecord.objects.filter(tenant=tenant, status="rated").order_by("id").values_list("id", flat=True))
    snapshots = {}
    t0 = time.perf_counter()
    for record_id in ids:
        with transaction.atomic():
            record = UsageRecord.objects.get(pk=record_id)
            if record.snapshot_id not in snapshots:
                snapshots[record.snapshot_id] = terms_of(RateSnapshot.objects.get(pk=record.snapshot_id).data)
            amount = price(record.billable_quantity, already=Decimal(0), terms=snapshots[record.snapshot_id])
            wallet = Wallet.objects.select_for_update().get(customer_id=record.customer_id)
            if wallet.balance < amount:
                continue
            wallet.balance -= amount
            wallet.save(update_fields=["balance"])
            entry = LedgerEntry.objects.create(wallet=wallet, kind="usage_debit", amount=-amount,
                                               balance_after=wallet.balance, caused_by="naive",
                                               idempotency_key=f"naive:{record.id}", record_count=1)
            summary = Summary.objects.select_for_update().get(pk=record.summary_id)
            line, _ = SummaryLine.objects.get_or_create(summary=summary, kind=record.rated_kind,
                                                        defaults={"unit": "token"})
            SummaryLine.objects.filter(pk=line.pk).update(record_count=F("record_count") + 1,
                                                          charged_amount=F("charged_amount") + amount)
            Summary.objects.filter(pk=summary.pk).update(total_amount=F("total_amount") + amount,
                                                         record_count=F("record_count") + 1)
            UsageRecord.objects.filter(pk=record.pk).update(status="billed", charged_amount=amount,
                                                            wallet_entry=entry)
    seconds = time.perf_counter() - t0
    return {"seconds": seconds, "rate": len(ids) / seconds}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=200_000)
    parser.add_argument("--customers", type=int, default=1000)
    parser.add_argument("--hot-records", type=int, default=50_000)
    parser.add_argument("--naive-sample", type=int, default=10_000)
    args = parser.parse_args()
    url = os.environ.get("TARIFA_BENCH_DATABASE_URL") or DEFAULT_URL
    setup_django(url)
    print(f"wallet benchmark: PostgreSQL, {os.cpu_count()} cores", flush=True)

    naive = bench_naive(args.naive_sample)
    print(f"naive (1 transaction per record, {args.naive_sample:,} sample):        {naive['rate']:>9,.0f} records/s",
          flush=True)

    tenant = create_prepaid_tenant("bench-many", args.customers)
    ingest_seconds = ingest(tenant, token_records(args.records, args.customers, prefix="m-", seed=1))
    many = charge(url, tenant, 2)
    check = verify(tenant)
    print(f"{args.records:,} records, {args.customers:,} prepaid customers, 2 workers:")
    print(f"  store + rate (in-process, batches of 5,000):    {args.records / ingest_seconds:>9,.0f} records/s "
          f"({ingest_seconds:.1f} s)")
    print(f"  fold + debit (first to last batch):             {many['rate']:>9,.0f} records/s ({many['seconds']:.1f} s)")
    print(f"  end to end (store + rate + fold + debit):       "
          f"{args.records / (ingest_seconds + many['wall']):>9,.0f} records/s")
    print(f"  ratio fold+debit / naive: {many['rate'] / naive['rate']:.1f}x;  check: {check}", flush=True)

    hot = create_prepaid_tenant("bench-hot", 1)
    ingest(hot, token_records(args.hot_records, 1, prefix="h-", seed=2))
    hot_run = charge(url, hot, 4)
    check = verify(hot)
    print(f"hot wallet: {args.hot_records:,} records of one customer, 4 workers: {hot_run['rate']:>9,.0f} records/s "
          f"({hot_run['seconds']:.1f} s); ratio / naive: {hot_run['rate'] / naive['rate']:.1f}x")
    print(f"  check (charged == debited, no unlinked charge, reconcile clean): {check}")
    ok = check["charged"] == check["debited"] and not check["unlinked"] and not check["wallet_differences"]
    print(f"  {'correct' if ok else 'WRONG'}")
    print("target: >= 20,000 records/s charged with 2 workers")


if __name__ == "__main__":
    main()
