"""Usage benchmark on PostgreSQL: CDRs for 1,000 customers over two months.

Measures, in one run (ours and the floor also in CPU time per record, by part, which says more
about another machine than a rate does: the floor runs on one core, ours on all):
  1. ours, file: `tarifa usage import Master.csv` (rated on the way in) + folding by 2 workers,
     end to end, with the import process's peak memory;
  2. ours, HTTP: POST /api/v1/usage in batches of 1,000 to `tarifa web` (gunicorn), three times: with
     the fold workers running beside it (as in production), alone (the workers start after it), and
     beside them again with calls that leave all folding to them (TARIFA_API_FOLD_IN_PLACE=0, the
     baseline of charging in the call), each also timed until everything is folded;
  3. the naive baseline (the seed's old flow: one ORM transaction per record to store and rate,
     one per record to fold) on a 10,000-record sample;
  4. the raw-SQL floor: COPY into a bare table + one INSERT … SELECT … GROUP BY, on all records;
  5. storing alone, beside the floor: COPY of the file phase's records, already rated, into a
     table shaped like the usage table (its indexes), one connection: what keeping each record
     under its idempotency key costs before any parsing, deduplication, rating or folding.

    .venv/bin/python bench/usage.py                 # 1,000,000 CDRs (the issue's size)
    .venv/bin/python bench/usage.py --records 100000 --http-records 50000
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import random
import resource
import subprocess
import sys
import threading
import time
from datetime import datetime, timedelta
from decimal import Decimal
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_URL = "postgres://postgres@127.0.0.1:5432/tarifa_bench_usage"
CUSTOMERS = 1000


def setup_django(url: str) -> None:
    import psycopg

    base, dbname = url.rsplit("/", 1)
    with psycopg.connect(base + "/postgres", autocommit=True) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{dbname}" WITH (FORCE)')
        admin.execute(f'CREATE DATABASE "{dbname}"')
    os.environ.update(TARIFA_DATABASE_URL=url, TARIFA_LOG_LEVEL="WARNING", DJANGO_SETTINGS_MODULE="tarifa.settings")
    sys.path.insert(0, str(ROOT))
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0)


def world_rates(count: int) -> list[dict]:
    """`count` international rates by destination prefix ("00" + country + area), as a full
    international table has them: rating must not slow down with the size of the tariff."""
    rng = random.Random(3)
    prefixes: set[str] = set()
    while len(prefixes) < count:
        prefixes.add(f"00{rng.randrange(1, 999)}{rng.randrange(10 ** rng.randrange(0, 4))}")
    return [{"kind": "call.international", "destination_prefix": prefix, "price": f"{rng.randrange(50, 500) / 100:.2f}",
             "unit": "second", "block_size": "60", "minimum": "60", "increment": "60"} for prefix in sorted(prefixes)]


def create_tenant(slug: str, *, extra_prefixes: int):
    from datetime import date

    from tarifa.metering.services.demo import DEMO_RATES
    from tarifa.metering.services.plans import create_plan, subscribe
    from tarifa.tenants.models import Customer
    from tarifa.tenants.services import create_tenant as make_tenant

    tenant, issued = make_tenant(name=slug, slug=slug)
    plan = create_plan(
        tenant=tenant, code="pbx", name="PBX", rates=[
            {"kind": k, "destination_prefix": p, "price": price, **terms} for k, p, price, _d, terms in DEMO_RATES]
        + world_rates(extra_prefixes),
        allowances=[{"code": "minutes", "kinds": ["call.local", "call.mobile", "call.long_distance"],
                     "quantity": "60000"}],
    )
    Customer.objects.bulk_create([Customer(tenant=tenant, external_id=f"acct-{i:04d}") for i in range(CUSTOMERS)])
    for customer in Customer.objects.filter(tenant=tenant):
        subscribe(customer=customer, plan=plan, starts_on=date(2025, 1, 1))
    return tenant, issued.raw_key


def write_cdrs(path: Path, count: int, *, seed: int = 1, id_prefix: str = "") -> None:
    rng = random.Random(seed)
    start = datetime(2025, 11, 1)
    span = int(timedelta(days=61).total_seconds())
    destinations = ["3", "9", "02111", "0021"]
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        for n in range(count):
            account = f"acct-{rng.randrange(CUSTOMERS):04d}"
            dst = rng.choice(destinations) + str(rng.randrange(10_000_000, 99_999_999))
            began = start + timedelta(seconds=rng.randrange(span))
            billsec = rng.randrange(1, 600)
            stamp = began.strftime("%Y-%m-%d %H:%M:%S")
            writer.writerow([account, "1133334444", dst, "from-internal", "", "SIP/a", "SIP/b", "Dial", "",
                             stamp, stamp, stamp, billsec + 5, billsec, "ANSWERED", "DOCUMENTATION",
                             f"{id_prefix}{n}", ""])


def cpu_seconds() -> dict[str, float]:
    """CPU seconds used so far by PostgreSQL, by the Tarifa processes this bench started (importer,
    web, workers) and by this process (the HTTP clients, the polling). A part's figure is what its
    live processes used plus what its exited ones used (counted in their parents' children times:
    the postmaster's for backends, ours for the processes we waited for), so the difference of two
    readings is what it spent in between, whoever started or exited meanwhile. Linux /proc, and
    PostgreSQL on this machine."""
    tick = os.sysconf("SC_CLK_TCK")
    processes: dict[int, tuple[str, int, float, float]] = {}  # pid -> (name, parent, own, exited children)
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as stat:
                name, fields = stat.read().split(" (", 1)[1].rsplit(")", 1)
        except OSError:
            continue
        values = fields.split()
        processes[int(entry)] = (name, int(values[1]), (int(values[11]) + int(values[12])) / tick,
                                 (int(values[13]) + int(values[14])) / tick)
    postgres = {pid for pid, (name, *_rest) in processes.items() if name == "postgres"}
    pg = sum(processes[pid][2] for pid in postgres)
    pg += sum(processes[pid][3] for pid in postgres if processes[pid][1] not in postgres)  # the postmaster's
    ours, parents = set(), {os.getpid()}
    while parents:  # the live processes descending from this one
        parents = {pid for pid, (_name, parent, *_rest) in processes.items() if parent in parents} - ours
        ours |= parents
    reaped, me = resource.getrusage(resource.RUSAGE_CHILDREN), resource.getrusage(resource.RUSAGE_SELF)
    return {"PostgreSQL": pg,
            "Tarifa processes": reaped.ru_utime + reaped.ru_stime + sum(processes[pid][2] + processes[pid][3]
                                                                         for pid in ours),
            "bench client": me.ru_utime + me.ru_stime}


def cpu_per_record(before: dict[str, float], records: int) -> dict[str, float]:
    """Microseconds of CPU per record since the reading `before`, by part."""
    return {part: (seconds - before[part]) / records * 1e6 for part, seconds in cpu_seconds().items()}


def describe_cpu(used: dict[str, float]) -> str:
    total = sum(used.values())
    cores = os.cpu_count() or 1
    parts = ", ".join(f"{part} {value:.0f}" for part, value in used.items())
    return (f"  CPU per record: {total:.0f} µs ({parts}); all {cores} cores busy on it would make at most "
            f"{cores / total * 1e6:,.0f} records/s")


def wait_folded(tenant, timeout: float = 3600) -> None:
    """Until every record of the tenant is folded, sweeping once a minute as the scheduler does
    (TARIFA_FOLD_SWEEP_CRON): the sweep re-marks summaries whose marker a fold dropped while an API
    call's records were committing, which nothing else would fold (the bench runs no scheduler)."""
    from tarifa.metering.models import UsageRecord

    deadline = next_sweep = time.monotonic()
    deadline += timeout
    while UsageRecord.objects.filter(tenant=tenant, status="rated").exists():
        now = time.monotonic()
        if now > deadline:
            raise SystemExit("bench: folding did not finish")
        if now >= next_sweep:
            sweep()
            next_sweep = now + 60
        time.sleep(0.2)


def start_workers(url: str, count: int) -> list[subprocess.Popen]:
    """Start `count` workers and return once each has sent its first heartbeat, so that what is
    measured next does not include their start (about a second of CPU each). They run as deployed
    (worker_wakeup): woken through RabbitMQ when TARIFA_BROKER_URL is set, else polling at the
    default interval. Polling every 0.1 s, as this bench had them do, cost 0.8 s of CPU per 20 s
    even with nothing to do: 4% of a 1M-record import's CPU went to idle workers."""
    from tarifa.runtime.models import WorkerHeartbeat

    env = {**os.environ, "TARIFA_DATABASE_URL": url, "TARIFA_LOG_LEVEL": "WARNING"}
    workers = [subprocess.Popen([sys.executable, "-m", "tarifa", "worker"], env=env, cwd=ROOT,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL) for _ in range(count)]
    deadline = time.monotonic() + 60
    while WorkerHeartbeat.objects.filter(pid__in=[w.pid for w in workers]).count() < count:
        if time.monotonic() > deadline or any(w.poll() is not None for w in workers):
            stop(workers)
            raise SystemExit("bench: the fold workers did not start")
        time.sleep(0.1)
    return workers


def worker_wakeup() -> str:
    from django.conf import settings

    if settings.TARIFA_BROKER_URL:
        return "woken through RabbitMQ"
    return f"polling every {settings.TARIFA_WORKER_POLL_SECONDS:g} s (no TARIFA_BROKER_URL)"


def stop(processes) -> None:
    for process in processes:
        process.terminate()
    for process in processes:
        process.wait(60)


def sweep() -> None:
    from tarifa.runtime.services import enqueue

    enqueue("metering.sweep")


def vacuum() -> None:
    """What autovacuum would have done after the earlier phases: every record the workers fold
    leaves a dead row version (rated -> billed), and this machine's PostgreSQL runs with autovacuum
    off (the CI's setting), so without this each phase would pay for the earlier phases' dead rows,
    which a production database reclaims. The phase's own dead rows stay, as they would for a while."""
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("VACUUM (ANALYZE)")


def bench_file(url: str, path: Path, records: int, workers: int, *, extra_prefixes: int) -> dict:
    vacuum()
    tenant, _key = create_tenant("bench-file", extra_prefixes=extra_prefixes)
    env = {**os.environ, "TARIFA_DATABASE_URL": url, "TARIFA_LOG_LEVEL": "WARNING"}
    pool = start_workers(url, workers)
    try:
        t0, cpu0 = time.perf_counter(), cpu_seconds()
        importer = subprocess.Popen([sys.executable, "-m", "tarifa", "usage", "import", str(path), "--tenant",
                                     tenant.slug, "--format", "asterisk-csv", "--no-progress"], env=env, cwd=ROOT,
                                    stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        output, errors = importer.communicate()
        import_seconds = time.perf_counter() - t0
        # The import process's own peak resident memory (ru_maxrss is in KiB on Linux).
        peak_kb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
        if importer.returncode != 0:
            raise SystemExit(f"bench: import failed: {errors[-2000:]}")
        wait_folded(tenant)
        total_seconds = time.perf_counter() - t0
    finally:
        stop(pool)
    cpu = cpu_per_record(cpu0, records)  # the workers' share too, now that they are stopped
    from tarifa.metering.models import UsageRecord
    from tarifa.metering.services.reconciliation import find_differences

    billed = UsageRecord.objects.filter(tenant=tenant, status="billed").count()
    assert billed == records, f"{billed} of {records} billed"
    differences = len(find_differences(tenant=tenant))
    return {"seconds": total_seconds, "import_seconds": import_seconds, "rate": records / total_seconds,
            "peak_mb": peak_kb / 1024, "differences": differences, "output": output.strip(), "cpu": cpu}


def bench_http(url: str, records: int, workers: int, *, extra_prefixes: int, fold_beside: bool = True,
               fold_in_place: bool = True) -> dict:
    """POST the records; with `fold_beside` the fold workers run during the ingestion (as in
    production), else they start once it is done. Either way, also times until all is folded.
    Without `fold_in_place` the calls leave every record to the workers."""
    import httpx

    vacuum()
    slug = "bench-http" + ("" if fold_beside else "-alone") + ("" if fold_in_place else "-workers")
    tenant, key = create_tenant(slug, extra_prefixes=extra_prefixes)
    port = 8931
    env = {**os.environ, "TARIFA_DATABASE_URL": url, "TARIFA_LOG_LEVEL": "WARNING", "TARIFA_API_RATE_LIMIT": "1000000/minute",
           "TARIFA_API_FOLD_IN_PLACE": "1" if fold_in_place else "0"}
    web = subprocess.Popen([sys.executable, "-m", "tarifa", "web", "--bind", f"127.0.0.1:{port}", "--workers", "3",
                            "--threads", "1"], env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    pool = start_workers(url, workers) if fold_beside else []
    try:
        for _ in range(200):
            try:
                httpx.get(f"http://127.0.0.1:{port}/api/docs", timeout=1)
                break
            except httpx.HTTPError:
                time.sleep(0.1)
        rng = random.Random(3)
        bodies = []
        for start in range(0, records, 1000):
            batch = [{"id": f"h{n}", "customer": f"acct-{rng.randrange(CUSTOMERS):04d}", "kind": "call",
                      "quantity": rng.randrange(1, 600), "destination": "9" + str(rng.randrange(10**7, 10**8)),
                      "occurred_at": f"2025-12-{1 + n % 28:02d}T{n % 24:02d}:00:00-03:00"}
                     for n in range(start, min(records, start + 1000))]
            bodies.append(json.dumps({"records": batch}).encode())
        headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
        accepted = [0]
        latencies: list[float] = []
        lock = threading.Lock()

        def client(chunk):
            with httpx.Client(timeout=120) as session:
                for body in chunk:
                    sent = time.perf_counter()
                    response = session.post(f"http://127.0.0.1:{port}/api/v1/usage", content=body, headers=headers)
                    response.raise_for_status()
                    with lock:
                        latencies.append(time.perf_counter() - sent)
                        accepted[0] += response.json()["accepted"]

        threads = [threading.Thread(target=client, args=(bodies[i::4],)) for i in range(4)]
        t0, cpu0 = time.perf_counter(), cpu_seconds()
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        seconds = time.perf_counter() - t0
        stop([web])
        # Alone, nothing else ran yet: the ingestion's own CPU (web, PostgreSQL, clients).
        ingestion_cpu = None if fold_beside else cpu_per_record(cpu0, records)
        if not fold_beside:
            pool = start_workers(url, workers)
        wait_folded(tenant)
        folded_seconds = time.perf_counter() - t0
    finally:
        stop([web, *pool])
    assert accepted[0] == records, f"{accepted[0]} of {records} accepted"
    latencies.sort()
    return {"seconds": seconds, "rate": records / seconds, "folded_seconds": folded_seconds,
            "latency_ms": {p: latencies[min(len(latencies) - 1, int(len(latencies) * p / 100))] * 1000
                           for p in (50, 99)},
            "folded_rate": records / folded_seconds, "cpu": cpu_per_record(cpu0, records),
            "ingestion_cpu": ingestion_cpu}


def bench_naive(path: Path, sample: int, *, extra_prefixes: int) -> dict:
    """The seed's flow: each CDR stored and rated in its own transaction, then folded one by one."""
    from django.db import transaction
    from django.db.models import F

    from tarifa.metering.importers import read_asterisk_csv
    from tarifa.metering.models import Summary, SummaryLine, UsageRecord
    from tarifa.metering.pricing import Rater, terms_of
    from tarifa.metering.rating import charge
    from tarifa.metering.services.ingestion import clean_record

    tenant, _key = create_tenant("bench-naive", extra_prefixes=extra_prefixes)
    t0 = time.perf_counter()
    with path.open(newline="") as stream:
        for n, raw in enumerate(read_asterisk_csv(stream, tz=tenant.tzinfo)):
            if n >= sample:
                break
            with transaction.atomic():
                clean = clean_record(raw)
                rating = Rater(tenant).rate(customer_ref=clean.customer, kind=clean.kind, quantity=clean.quantity,
                                            occurred_at=clean.occurred_at, destination=clean.destination)
                record = UsageRecord.objects.create(
                    tenant=tenant, external_id=clean.id, content_hash=clean.content_hash, ingest_token="naive",
                    customer_ref=clean.customer, customer_id=rating.customer_id, kind=clean.kind,
                    quantity=clean.quantity, occurred_at=clean.occurred_at,
                    period=clean.occurred_at.astimezone(tenant.tzinfo).strftime("%Y-%m"),
                    destination=clean.destination, received_at=clean.occurred_at, status=rating.status,
                    plan_id=rating.plan_id, rated_kind=rating.rated_kind,
                    billable_quantity=rating.billable_quantity, snapshot_id=rating.snapshot_id)
            with transaction.atomic():  # the job per CDR: lock the summary, add, mark billed
                summary, _ = Summary.objects.select_for_update().get_or_create(
                    customer_id=record.customer_id, period=record.period,
                    defaults={"tenant": tenant, "currency": "BRL"})
                amount = charge(record.billable_quantity, already=Decimal(0), terms=terms_of(record.snapshot.data))
                line, _ = SummaryLine.objects.get_or_create(summary=summary, kind=record.rated_kind,
                                                            defaults={"unit": "second"})
                SummaryLine.objects.filter(pk=line.pk).update(record_count=F("record_count") + 1,
                                                              charged_amount=F("charged_amount") + amount)
                Summary.objects.filter(pk=summary.pk).update(total_amount=F("total_amount") + amount,
                                                             record_count=F("record_count") + 1)
                UsageRecord.objects.filter(pk=record.pk).update(status="billed", charged_amount=amount)
    seconds = time.perf_counter() - t0
    return {"seconds": seconds, "rate": sample / seconds}


def bench_floor(url: str, path: Path, records: int) -> dict:
    """COPY the CSV into a bare table and build the monthly sums in one INSERT … SELECT … GROUP BY."""
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("DROP TABLE IF EXISTS floor_cdr, floor_summary")
        # A bare table as the issue defines the floor: no index, no constraint, but logged, as ours
        # are (UNLOGGED, without WAL, measured 8% faster).
        conn.execute("""CREATE TABLE floor_cdr (accountcode text, src text, dst text, dcontext text,
            clid text, channel text, dstchannel text, lastapp text, lastdata text, start timestamp,
            answer timestamp, "end" timestamp, duration int, billsec int, disposition text, amaflags text,
            uniqueid text, userfield text)""")
        conn.execute("CREATE TABLE floor_summary (accountcode text, month int, year int, calls bigint, seconds bigint)")
        t0, cpu0 = time.perf_counter(), cpu_seconds()
        with conn.cursor() as cursor:
            with path.open("rb") as handle, cursor.copy("COPY floor_cdr FROM STDIN WITH (FORMAT csv)") as copy:
                while chunk := handle.read(1 << 20):
                    copy.write(chunk)
            cursor.execute("""INSERT INTO floor_summary SELECT accountcode, extract(month FROM start)::int,
                extract(year FROM start)::int, count(*), sum(billsec) FROM floor_cdr
                WHERE disposition = 'ANSWERED' GROUP BY 1, 2, 3""")
        seconds, cpu = time.perf_counter() - t0, cpu_per_record(cpu0, records)
        conn.execute("DROP TABLE floor_cdr, floor_summary")
    return {"seconds": seconds, "rate": records / seconds, "cpu": cpu}


def bench_stored(url: str, work: Path, records: int) -> dict:
    """What storing alone costs: COPY the file phase's records, already rated and billed, into an
    empty table shaped like the usage table (its primary key, unique id and indexes), on one
    connection as the floor runs. No parsing, deduplication, rating or folding: a bound on any
    design that stores each record once under its idempotency key, to set the floor beside."""
    import psycopg

    dump = work / "usage.copy"
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("DROP TABLE IF EXISTS stored_usage")
        conn.execute("CREATE TABLE stored_usage (LIKE metering_usagerecord INCLUDING ALL)")
        with conn.cursor() as cursor, dump.open("wb") as handle:
            with cursor.copy("""COPY (SELECT u.* FROM metering_usagerecord u JOIN tenants_tenant t ON t.id = u.tenant_id
                                WHERE t.slug = 'bench-file') TO STDOUT""") as copy:
                for block in copy:
                    handle.write(block)
        t0, cpu0 = time.perf_counter(), cpu_seconds()
        with conn.cursor() as cursor, dump.open("rb") as handle, cursor.copy("COPY stored_usage FROM STDIN") as copy:
            while block := handle.read(1 << 20):
                copy.write(block)
        seconds, cpu = time.perf_counter() - t0, cpu_per_record(cpu0, records)
        conn.execute("DROP TABLE stored_usage")
    dump.unlink()
    return {"seconds": seconds, "rate": records / seconds, "cpu": cpu}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=1_000_000)
    parser.add_argument("--http-records", type=int, default=None, help="default: same as --records")
    parser.add_argument("--naive-sample", type=int, default=10_000)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--skip", default="", help="comma list of: file,http,http-alone,http-workers,naive,floor")
    parser.add_argument("--extra-prefixes", type=int, default=0,
                        help="international prefixes added to the plan (a full table has thousands)")
    args = parser.parse_args()
    url = os.environ.get("TARIFA_BENCH_DATABASE_URL") or DEFAULT_URL
    skip = set(filter(None, args.skip.split(",")))
    setup_django(url)
    work = ROOT / "var" / "bench"
    work.mkdir(parents=True, exist_ok=True)
    path = work / "Master.csv"
    write_cdrs(path, args.records)
    print(f"usage benchmark: {args.records:,} CDRs, {CUSTOMERS:,} customers, 2 months, PostgreSQL, "
          f"{args.workers} fold workers {worker_wakeup()}, {os.cpu_count()} cores"
          + (f", plan with {args.extra_prefixes:,} more international prefixes" if args.extra_prefixes else ""),
          flush=True)
    results = {}
    if "floor" not in skip:
        results["floor"] = bench_floor(url, path, args.records)
        print(f"raw-SQL floor (COPY + INSERT…SELECT…GROUP BY): {results['floor']['rate']:>10,.0f} records/s "
              f"({results['floor']['seconds']:.1f} s)", flush=True)
        print(describe_cpu(results["floor"]["cpu"]), flush=True)
    if "naive" not in skip:
        results["naive"] = bench_naive(path, args.naive_sample, extra_prefixes=args.extra_prefixes)
        print(f"naive (1 ORM transaction per record, {args.naive_sample:,} sample): "
              f"{results['naive']['rate']:>10,.0f} records/s", flush=True)
    if "file" not in skip:
        ours = results["file"] = bench_file(url, path, args.records, args.workers, extra_prefixes=args.extra_prefixes)
        print(f"ours: import Master.csv + rate + fold:   {ours['rate']:>10,.0f} records/s "
              f"({ours['seconds']:.1f} s, import {ours['import_seconds']:.1f} s); import peak memory "
              f"{ours['peak_mb']:.0f} MB; reconcile differences: {ours['differences']}", flush=True)
        print(describe_cpu(ours["cpu"]), flush=True)
        if "naive" in results:
            print(f"  ratio ours/naive: {ours['rate'] / results['naive']['rate']:.1f}x")
        if "floor" in results:
            print(f"  ratio ours/floor: {ours['rate'] / results['floor']['rate']:.2f} "
                  f"(floor is {results['floor']['rate'] / ours['rate']:.1f}x faster; target: within 3x); "
                  f"in CPU per record, ours costs {sum(ours['cpu'].values()) / sum(results['floor']['cpu'].values()):.1f}x"
                  " the floor's")
    if "file" in results and "floor" in results:
        stored = results["stored"] = bench_stored(url, work, args.records)
        floor = results["floor"]
        print(f"  storing alone (COPY of those records, rated, into a table shaped like ours, one connection): "
              f"{stored['rate']:,.0f} records/s, {stored['rate'] / floor['rate']:.2f} of the floor's rate; in CPU "
              f"per record {sum(stored['cpu'].values()):.1f} µs, {sum(stored['cpu'].values()) / sum(floor['cpu'].values()):.1f}x"
              " the floor's", flush=True)
    for name, fold_beside, fold_in_place, label in (
            ("http", True, True, f"{args.workers} fold workers running beside it"),
            ("http-alone", False, True, "fold workers started after it"),
            ("http-workers", True, False, f"{args.workers} fold workers beside it folding all (calls fold nothing)")):
        if name in skip:
            continue
        http = results[name] = bench_http(url, args.http_records or args.records, args.workers,
                                          extra_prefixes=args.extra_prefixes, fold_beside=fold_beside,
                                          fold_in_place=fold_in_place)
        print(f"ours: HTTP ingestion, batches of 1,000, {label}: {http['rate']:>10,.0f} records/s "
              f"({http['seconds']:.1f} s); all folded after {http['folded_seconds']:.1f} s "
              f"({http['folded_rate']:,.0f} records/s end to end); call latency p50 "
              f"{http['latency_ms'][50]:.0f} ms, p99 {http['latency_ms'][99]:.0f} ms (4 clients)", flush=True)
        if http["ingestion_cpu"]:
            print(describe_cpu(http["ingestion_cpu"]) + " for the ingestion alone", flush=True)
        print(describe_cpu(http["cpu"]) + " end to end", flush=True)
    if "http" in results and "http-workers" in results:
        print(f"  calls folding in place against leaving it to the workers: ingestion "
              f"{results['http']['rate'] / results['http-workers']['rate']:.2f}x, end to end "
              f"{results['http']['folded_rate'] / results['http-workers']['folded_rate']:.2f}x")
    print("targets: file end to end >= 50,000 records/s, import peak < 200 MB, HTTP >= 20,000 records/s")


if __name__ == "__main__":
    main()
