"""Payment-check benchmark on PostgreSQL against a local fake PagSeguro.

Measures, in one run:
  1. the due-check query (the partial index on next_check_at) with 1,000 / 10,000 / 100,000 open
     invoices and the same 100 of them due: its time must not grow with the number open; and what
     a /metrics scrape spends reading the payment backlog at 100,000 open;
  2. checks per second with 2 workers against the fake gateway answering in 20 ms (gateway calls
     of a claimed batch run concurrently), over 20,000 due invoices among the 100,000 open;
  3. the monthly close for 100,000 postpaid customers, each with summaries of the three months
     before (October and November already invoiced): the first run, which invoices December; a
     second run 15 minutes later with nothing to do; a third after 1% of the summaries grew (late
     usage), which makes that many adjustment invoices; a fourth after they fell below what was
     invoiced (reversals), which makes that many credit notes.

    .venv/bin/python bench/payments.py
    .venv/bin/python bench/payments.py --due 5000 --close-customers 20000
    .venv/bin/python bench/payments.py --skip checks
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from datetime import date, timedelta
from decimal import Decimal
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from usage import ROOT, setup_django, start_workers, stop  # noqa: E402  (bench/usage.py)

DEFAULT_URL = "postgres://postgres@127.0.0.1:5432/tarifa_bench_payments"
FAKE = """
import sys, time
sys.path.insert(0, {root!r})
from tarifa.payments.testing import FakePagSeguro
fake = FakePagSeguro(delay=0.02)
print(fake.url, flush=True)
while True:
    time.sleep(3600)
"""


def add_invoices(tenant, customer, count: int, *, start: int, due: int) -> None:
    """Bulk rows (the API path emits an event per invoice, which is not what is measured here)."""
    from django.utils import timezone

    from tarifa.payments.models import Invoice, PaymentCheck

    now = timezone.now()
    for offset in range(0, count, 5000):
        size = min(5000, count - offset)
        invoices = Invoice.objects.bulk_create([
            Invoice(tenant=tenant, customer=customer, reference=f"INV-{start + offset + i}", content_hash="bench",
                    amount=Decimal("99.90"), currency="BRL", due_date=date(2026, 1, 10), gateway="pagseguro",
                    created_at=now - timedelta(hours=1)) for i in range(size)])
        PaymentCheck.objects.bulk_create([
            PaymentCheck(invoice=invoice, tenant=tenant, interval_seconds=900, expires_at=now + timedelta(days=30),
                         next_check_at=now - timedelta(minutes=1) if start + offset + i < due
                         else now + timedelta(minutes=30 + (start + offset + i) % 600))
            for i, invoice in enumerate(invoices)])


def bench_close(customers: int) -> None:
    """Phase 3: the monthly close (payments.close_month) over `customers` postpaid customers."""
    from datetime import datetime, timezone as dt_timezone

    from django.db import connection
    from django.db.models import F

    from tarifa.metering.models import Summary
    from tarifa.payments.models import Invoice
    from tarifa.payments.services.invoices import close_month
    from tarifa.tenants.models import Customer
    from tarifa.tenants.services import create_tenant

    tenant, _ = create_tenant(name="bench-close", slug="bench-close")
    made_at = datetime(2025, 12, 1, 12, tzinfo=dt_timezone.utc)
    t0 = time.perf_counter()
    for offset in range(0, customers, 5000):
        batch = Customer.objects.bulk_create([Customer(tenant=tenant, external_id=f"acct-{n}")
                                              for n in range(offset, min(customers, offset + 5000))])
        summaries = Summary.objects.bulk_create([
            Summary(tenant=tenant, customer=c, period=period, currency="BRL", record_count=10,
                    total_amount=Decimal("10.00") + c.id % 500)
            for c in batch for period in ("2025-10", "2025-11", "2025-12")])
        Invoice.objects.bulk_create([
            Invoice(tenant=tenant, customer=s.customer, reference=f"TRF-{s.period}-{s.customer.external_id}",
                    content_hash="bench", amount=s.total_amount, currency="BRL", due_date=date(2025, 12, 10),
                    gateway="pagseguro", summary=s, status="paid", created_at=made_at)
            for s in summaries if s.period != "2025-12"])
    with connection.cursor() as cursor:
        cursor.execute("VACUUM ANALYZE")
    print(f"monthly close: {customers:,} postpaid customers, summaries for 3 months, 2 of them invoiced "
          f"(set up in {time.perf_counter() - t0:.0f} s)", flush=True)
    close = datetime(2026, 1, 1, 12, tzinfo=dt_timezone.utc)
    every_300th = Summary.objects.filter(tenant=tenant).order_by("id").values_list("id", flat=True)[::300]
    runs = [("first run (invoices December)", close, None, "invoices"),
            ("next run, nothing to do", close + timedelta(minutes=15), None, "invoices"),
            # a day apart: a summary is settled at most once a day (settle_every_days)
            ("after 1% grew: adjustments", close + timedelta(days=1), Decimal("1.50"), "invoices"),
            ("after 1% fell: credit notes", close + timedelta(days=2), Decimal("-3.00"), "credit notes")]
    for label, now, change, made_what in runs:
        if change:  # 1% of the summaries, spread over the three months
            changed = list(every_300th[:customers // 100])
            Summary.objects.filter(id__in=changed).update(total_amount=F("total_amount") + change)
        t0 = time.perf_counter()
        made = close_month(now=now).made
        seconds = time.perf_counter() - t0
        rate = f", {made / seconds:,.0f}/s" if made else ""
        print(f"  {label}: {made:,} {made_what} in {seconds:.2f} s{rate}", flush=True)


def time_due_query(samples: int = 30) -> tuple[float, float]:
    from django.db import connection, transaction

    from tarifa.payments.services.checking import due_check_ids

    timings = []
    for _ in range(samples):
        t0 = time.perf_counter()
        with transaction.atomic():
            ids = due_check_ids(limit=100)
        timings.append((time.perf_counter() - t0) * 1000)
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE payments_paymentcheck")
    return statistics.median(timings), max(timings), len(ids)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--due", type=int, default=20_000)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--close-customers", type=int, default=100_000)
    parser.add_argument("--skip", default="", help="comma-separated phases to leave out: checks, close")
    args = parser.parse_args()
    skip = set(filter(None, args.skip.split(",")))
    url = os.environ.get("TARIFA_BENCH_DATABASE_URL") or DEFAULT_URL
    setup_django(url)
    if "checks" not in skip:
        bench_checks(url, args)
    if "close" not in skip:
        bench_close(args.close_customers)


def bench_checks(url: str, args) -> None:
    """Phases 1 and 2: the due-check query, and checks per second against the fake gateway."""
    from django.conf import settings
    from django.db import connection

    from tarifa.payments.models import CheckLog, PaymentCheck
    from tarifa.payments.services.credentials import set_credential
    from tarifa.runtime.services import enqueue
    from tarifa.tenants.services import create_customer, create_tenant

    fake = subprocess.Popen([sys.executable, "-c", FAKE.format(root=str(ROOT))], stdout=subprocess.PIPE, text=True)
    fake_url = fake.stdout.readline().strip()
    try:
        tenant, _ = create_tenant(name="bench-payments", slug="bench-payments")
        settings.TARIFA_PRIVATE_URLS = True  # the fake gateway listens on 127.0.0.1
        set_credential(tenant=tenant, gateway="pagseguro", base_url=fake_url, email="shop@example.com",
                       token="TOKEN", requests_per_minute=10_000_000)
        customer, _ = create_customer(tenant=tenant, external_id="c")
        print(f"payments benchmark: PostgreSQL, {os.cpu_count()} cores, fake PagSeguro answering in 20 ms", flush=True)
        print("due-check query (100 due; LIMIT 100; median / max of 30):")
        created = 0
        for total in (1_000, 10_000, 100_000):
            add_invoices(tenant, customer, total - created, start=created, due=100)
            created = total
            with connection.cursor() as cursor:
                cursor.execute("VACUUM ANALYZE payments_paymentcheck")
            median, worst, found = time_due_query()
            print(f"  {total:>7,} open: {median:6.2f} ms median, {worst:6.2f} ms max ({found} found)  target < 50 ms",
                  flush=True)
        with connection.cursor() as cursor:
            cursor.execute("EXPLAIN SELECT invoice_id FROM payments_paymentcheck WHERE status IN ('pending', "
                           "'processing') AND next_check_at <= now() ORDER BY next_check_at LIMIT 100")
            print("  plan: " + " / ".join(row[0].strip() for row in cursor.fetchall()[:2]))
        from tarifa.payments.selectors import payment_backlog

        timings = []
        for _ in range(10):
            t0 = time.perf_counter()
            payment_backlog()
            timings.append((time.perf_counter() - t0) * 1000)
        print(f"/metrics' payment backlog read, {created:,} open: {statistics.median(timings):.1f} ms median", flush=True)

        from django.utils import timezone

        due_ids = list(PaymentCheck.objects.order_by("invoice_id").values_list("invoice_id", flat=True)[:args.due])
        PaymentCheck.objects.filter(invoice_id__in=due_ids).update(next_check_at=timezone.now() - timedelta(minutes=1))
        with connection.cursor() as cursor:
            cursor.execute("VACUUM ANALYZE payments_paymentcheck")
        for _ in range(args.workers * 2):
            enqueue("payments.check_due")
        t0 = time.perf_counter()
        workers = start_workers(url, args.workers)
        try:
            while PaymentCheck.objects.filter(status__in=["pending", "processing"],
                                              next_check_at__lte=timezone.now()).exists():
                time.sleep(0.2)
        finally:
            stop(workers)
        wall = time.perf_counter() - t0
        logs = CheckLog.objects.all()
        from django.db.models import Max, Min

        window = logs.aggregate(a=Min("checked_at"), b=Max("checked_at"))
        seconds = (window["b"] - window["a"]).total_seconds()
        checked = logs.count()
        print(f"checks: {checked:,} due invoices among {created:,} open, {args.workers} workers: "
              f"{checked / seconds:,.0f} checks/s (first to last check, {seconds:.1f} s; wall incl. start-up "
              f"{wall:.1f} s)  target >= 500/s")
        errors = logs.filter(outcome="error").count()
        print(f"  errors: {errors}; every due invoice checked once: {checked == args.due}")
    finally:
        fake.terminate()


if __name__ == "__main__":
    main()
