"""PostgreSQL's set-based ingestion (`services/bulk.py`) against the Python reference path.

The same random records go, chunk by chunk, to four tenants with identical plans and customers:
- `ref`: `ingest_in_python` (SQLite's path, record by record with the Python rater), then folded
  in Python;
- `api`: `ingest_in_sql` (the API on PostgreSQL: rated and, where it may, folded in SQL);
- `wrk`: `ingest_in_sql` leaving every record to the workers (TARIFA_API_FOLD_IN_PLACE off), whose
  fold is set-based SQL too;
- `imp`: `import_usage` (files on PostgreSQL: rated and, where it may, folded in SQL).
Every answer, rating, charge, allowance use, summary line and wallet balance must agree.
"""

from __future__ import annotations

import copy
import random
from contextlib import contextmanager
from datetime import date, datetime, timedelta, timezone
from decimal import Decimal
from zoneinfo import ZoneInfo

import pytest
from django.db import transaction
from django.test import override_settings
from hypothesis import HealthCheck, given, settings, strategies as st

from tarifa.metering.models import FoldBatch, PendingSummary, Summary, UsageRecord
from tarifa.metering.services import bulk
from tarifa.metering.services.folding import fold_all_pending
from tarifa.metering.services.importing import import_usage
from tarifa.metering.services.ingestion import ingest_in_python, ingest_in_sql
from tarifa.metering.services.plans import create_plan, subscribe
from tarifa.metering.services.reconciliation import find_differences
from tarifa.tenants.services import create_customer, create_tenant
from tarifa.wallets.models import Wallet
from tarifa.wallets.services.ledger import configure_wallet, top_up

SAO_PAULO = ZoneInfo("America/Sao_Paulo")
PER_MINUTE = {"unit": "second", "block_size": "60"}
MAIN_RATES = [
    {"kind": "call.local", "price": "0.13", "minimum": "30", "increment": "6", **PER_MINUTE},
    {"kind": "call.mobile", "destination_prefix": "9", "price": "0.33", "minimum": "30", "increment": "6",
     "rounding": "half_even", **PER_MINUTE},
    {"kind": "call.mobile", "destination_prefix": "+55119", "price": "0.25", "rounding": "up", **PER_MINUTE},
    {"kind": "call.long_distance", "destination_prefix": "0", "price": "0.17", "rounding": "down", **PER_MINUTE},
    {"kind": "call.international", "destination_prefix": "00", "price": "1.00", "minimum": "60", "increment": "60",
     **PER_MINUTE},
    {"kind": "llm.input_tokens", "unit": "token", "price": "0.50", "block_size": "1000000"},
    {"kind": "llm.input_tokens", "destination_prefix": "gpt-4o", "unit": "token", "price": "2.50",
     "block_size": "1000000"},
    {"kind": "llm.input_tokens", "destination_prefix": "gpt-4o-mini", "unit": "token", "price": "0.15",
     "block_size": "1000000"},
    {"kind": "llm.output_tokens", "unit": "token", "block_size": "1000", "price": "1.00",
     "tiers": [{"up_to": "2000", "price": "1.00"}, {"up_to": None, "price": "0.50"}]},
    {"kind": "sms", "unit": "message", "price": "0.07"},
]
CUSTOMERS = ["c1", "c2", "c3", "c4", "ghost"]  # c3 has no plan, c4 is prepaid, ghost does not exist
DESTINATIONS = ["33334444", "987654321", "+55 11 98765-4321", "(021) 1122-3344", "0021551199", "", "gpt-4o",
                "GPT-4o-mini ", "claude-3"]
KINDS = ["call", "call.local", "call.mobile", "llm.input_tokens", "llm.output_tokens", "sms", "video.minutes"]
MONTH_START = datetime(2025, 12, 1, tzinfo=SAO_PAULO)


def make_tenant(slug: str, *, extra_rates: list[dict] = ()):
    tenant, _issued = create_tenant(name=slug, slug=slug)
    main = create_plan(tenant=tenant, code="main", name="Main", rates=MAIN_RATES + list(extra_rates), allowances=[
        {"code": "minutes", "kinds": ["call.local", "call.mobile"], "quantity": "600"},
        {"code": "tokens", "kinds": ["llm.input_tokens"], "quantity": "5000"},
    ], alert_thresholds=[50, 100])
    late = create_plan(tenant=tenant, code="late", name="Late",
                       rates=[{"kind": "call.local", "price": "0.05", **PER_MINUTE}])
    for external_id in CUSTOMERS[:4]:
        customer, _ = create_customer(tenant=tenant, external_id=external_id,
                                      billing_mode="prepaid" if external_id == "c4" else "postpaid")
        if external_id != "c3":
            subscribe(customer=customer, plan=main, starts_on=date(2025, 1, 1))
        if external_id == "c2":
            subscribe(customer=customer, plan=late, starts_on=date(2025, 12, 16))
        if external_id == "c4":
            configure_wallet(customer=customer, unit="BRL", credit_limit=Decimal("1"))
            top_up(customer=customer, amount=Decimal("3"), idempotency_key="start", caused_by="test")
    return tenant


records_strategy = st.lists(
    st.fixed_dictionaries({
        "id": st.sampled_from([f"r{i}" for i in range(120)]),
        "customer": st.sampled_from(["c1", "c1", "c1", "c2", "c2", *CUSTOMERS[2:]]),  # mostly foldable
        "kind": st.sampled_from(["call"] * 4 + KINDS),
        "quantity": st.one_of(st.integers(0, 900), st.decimals(0, 900, places=2).map(str),
                              st.integers(0, 3000),
                              # around MAX_RECORD_CHARGE at call.local's terms, and far beyond any
                              st.sampled_from(["461538461538455", "461538461538456", "10000000000000000"])),
        # around the month boundaries, in minutes so that ties happen
        "occurred_at": st.integers(-90, 60 * 24 * 40).map(
            lambda m: (MONTH_START + timedelta(minutes=m * 7)).isoformat()),
        "destination": st.sampled_from(DESTINATIONS),
    }, optional={"attributes": st.sampled_from([{}, {"model": "gpt-4o-mini"}, {"model": " GPT-4o\t"}, {"x": 1}, {"model": 4}])}),
    min_size=10, max_size=80,
)


def _records_of(tenant) -> dict:
    rows = UsageRecord.objects.filter(tenant=tenant).select_related("snapshot")
    return {r.external_id: (r.status, r.unrated_reason, r.customer_ref, r.period, r.rated_kind, r.billable_quantity,
                            r.allowance_used, r.charged_amount, r.failure_code, r.amount_due,
                            r.snapshot and {k: v for k, v in r.snapshot.data.items() if k != "rate_id"})
            for r in rows}


def _summaries_of(tenant) -> dict:
    result = {}
    for summary in Summary.objects.filter(tenant=tenant).select_related("customer").prefetch_related(
            "lines", "allowance_usage__allowance"):
        lines = sorted((l.kind, l.unit, l.record_count, l.quantity, l.billable_quantity, l.allowance_used,
                        l.chargeable_quantity, l.charged_amount) for l in summary.lines.all() if l.record_count)
        usage = sorted((u.allowance.code, u.included, u.used) for u in summary.allowance_usage.all() if u.used)
        if summary.record_count or lines or usage:
            result[(summary.customer.external_id, summary.period)] = (
                summary.currency, summary.record_count, summary.total_amount, summary.wallet_paid_amount, lines, usage)
    return result


def _balances_of(tenant) -> dict:
    return {w.customer.external_id: w.balance for w in Wallet.objects.filter(tenant=tenant).select_related("customer")}


def ingest_three_ways(chunks: list[list[dict]], *, batch: int, extra_rates: list[dict] = ()) -> None:
    """Send `chunks` to four identical tenants by the paths above and require the same outcome."""
    ref, api, wrk, imp = (make_tenant(slug, extra_rates=extra_rates) for slug in ("ref", "api", "wrk", "imp"))
    ref_answers, api_answers, wrk_answers, imp_counts = [], [], [], {}
    for chunk in chunks:
        ref_answers += ingest_in_python(tenant=ref, records=copy.deepcopy(chunk)).results
        api_answers += ingest_in_sql(tenant=api, records=copy.deepcopy(chunk)).results
        with override_settings(TARIFA_API_FOLD_IN_PLACE=False):
            wrk_answers += ingest_in_sql(tenant=wrk, records=copy.deepcopy(chunk)).results
        report = import_usage(tenant=imp, records=copy.deepcopy(chunk), chunk_size=len(chunk))
        for status, count in report.counts.items():
            imp_counts[status] = imp_counts.get(status, 0) + count
        with override_settings(TARIFA_FOLD_IN_SQL=False):  # the reference folds in Python too
            fold_all_pending(batch_size=batch, folded_by="test",
                             summary_ids=list(Summary.objects.filter(tenant=ref).values_list("id", flat=True)))
        fold_all_pending(batch_size=batch, folded_by="test")
    expected_answers = [(a.id, a.status, a.code) for a in ref_answers]
    assert [(a.id, a.status, a.code) for a in api_answers] == expected_answers
    assert [(a.id, a.status, a.code) for a in wrk_answers] == expected_answers
    ref_counts = {}
    for answer in ref_answers:
        ref_counts[answer.status] = ref_counts.get(answer.status, 0) + 1
    assert {k: v for k, v in imp_counts.items() if v} == ref_counts
    expected = _records_of(ref)
    assert _records_of(api) == expected
    assert _records_of(wrk) == expected
    assert _records_of(imp) == expected
    summaries = _summaries_of(ref)
    assert _summaries_of(api) == summaries
    assert _summaries_of(wrk) == summaries
    assert _summaries_of(imp) == summaries
    assert _balances_of(api) == _balances_of(wrk) == _balances_of(imp) == _balances_of(ref)
    for tenant in (ref, api, wrk, imp):
        assert find_differences(tenant=tenant) == []


def differential_examples(test):
    """The inputs of the differential tests (a SQL path against the Python reference): random
    records, cut into chunks at up to 3 places, folded in batches of 1, 7 or 1,000."""
    examples = given(records=records_strategy, cuts=st.lists(st.integers(1, 79), max_size=3),
                     batch=st.sampled_from([1, 7, 1000]))
    return settings(max_examples=40, deadline=None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])(examples(test))


@differential_examples
def test_sql_ingestion_matches_the_python_reference(postgres, records, cuts, batch):
    with rolled_back():
        ingest_three_ways(chunks_of(records, cuts), batch=batch)


@differential_examples
def test_rates_probed_by_prefix_match_the_python_reference(postgres, monkeypatch, records, cuts, batch):
    """Every (plan, kind) probed at its prefix lengths instead of walked, as a large tariff is."""
    monkeypatch.setattr(bulk, "WALKED_RATES", 0)
    with rolled_back():
        ingest_three_ways(chunks_of(records, cuts), batch=batch)


def test_a_tariff_of_many_prefixes_rates_each_call_by_its_longest_prefix(postgres):
    """An international table, more prefixes than bulk.WALKED_RATES and nested ones among them:
    every call gets the rate the Python reference picks, whatever the lengths of its prefixes."""
    rng = random.Random(5)
    prefixes = {"00", "001", "0012", "00123", "+1", "+44", "+4420", *(f"00{rng.randrange(2, 999)}" for _ in range(30))}
    world = [{"kind": "call.international", "destination_prefix": prefix, "price": f"{rng.randrange(50, 500) / 100:.2f}",
              **PER_MINUTE} for prefix in sorted(prefixes - {"00"})]
    assert len(world) > bulk.WALKED_RATES
    destinations = [prefix + str(rng.randrange(10 ** rng.randrange(0, 8))) for prefix in sorted(prefixes)]
    destinations += ["0", "", "+", "+4", "12345", "(00) 44 20 7946-0000", "+44 20 7946 0000", "987654321"]
    records = [{"id": f"w{n}", "customer": rng.choice(["c1", "c2"]), "kind": rng.choice(["call", "call.international"]),
                "quantity": rng.randrange(1, 900), "destination": rng.choice(destinations),
                "occurred_at": (MONTH_START + timedelta(minutes=n)).isoformat()} for n in range(300)]
    ingest_three_ways([records[:120], records[120:]], batch=50, extra_rates=world)
    kinds = set(UsageRecord.objects.filter(tenant__slug="api").values_list("rated_kind", flat=True))
    assert {"call.international", "call.local", "call.mobile", "call.long_distance"} <= kinds


def test_a_change_of_terms_is_rated_by_the_next_call_on_the_same_connection(postgres):
    """The rate tables a connection keeps (bulk.load_rate_tables) are rebuilt when a plan's rates
    are replaced or one of them is edited in place (as the admin does)."""
    from tarifa.metering.models import PricePlan, Rate
    from tarifa.metering.services.plans import replace_plan_terms

    tenant = make_tenant("terms")
    plan = PricePlan.objects.get(tenant=tenant, code="main")

    def price_of(record_id: str, destination: str) -> str:
        ingest_in_sql(tenant=tenant, records=[call(record_id, 60, 5, customer="c3", destination=destination)])
        return UsageRecord.objects.select_related("snapshot").get(external_id=record_id).snapshot.data["price"]

    subscribe(customer=tenant.customers.get(external_id="c3"), plan=plan, starts_on=date(2025, 1, 1))
    assert Decimal(price_of("t1", "33334444")) == Decimal("0.13")
    replace_plan_terms(plan=plan, rates=[{**MAIN_RATES[0], "price": "0.21"}, *MAIN_RATES[1:]])
    assert Decimal(price_of("t2", "33334444")) == Decimal("0.21")
    Rate.objects.filter(plan=plan, kind="call.mobile", destination_prefix="9").update(price=Decimal("0.44"))
    assert Decimal(price_of("t3", "987654321")) == Decimal("0.44")
    assert Decimal(price_of("t4", "33334444")) == Decimal("0.21")


def chunks_of(records: list[dict], cuts: list[int]) -> list[list[dict]]:
    """`records` cut before each position in `cuts` (those inside the list)."""
    bounds = sorted({0, len(records), *(c for c in cuts if c < len(records))})
    return [records[start:end] for start, end in zip(bounds, bounds[1:])]


@contextmanager
def rolled_back():
    """Undo what the block stored: hypothesis runs its examples in one test's transaction."""
    savepoint = transaction.savepoint()
    try:
        yield
    finally:
        transaction.savepoint_rollback(savepoint)


def test_rounding_modes_and_allowance_order_agree(postgres):
    """Fixed cases the random ones might miss: every rounding mode at fractions of a cent, ties in
    time, the allowance running out within a chunk and a plan change inside the month."""
    def record(record_id, customer, seconds, day, minute, destination, kind="call"):
        occurred = datetime(2025, 12, day, 9, tzinfo=SAO_PAULO) + timedelta(minutes=minute)
        return {"id": record_id, "customer": customer, "kind": kind, "quantity": seconds,
                "occurred_at": occurred.isoformat(), "destination": destination}

    long_distance = [record(f"ld{s}", "c1", s, 1, s, "(021) 1122-3344") for s in (7, 11, 13, 29, 41)]
    # Sent latest first: charged in time order, the first two use up the 600 s allowance.
    mobile = [record("mob-e", "c1", 61, 2, 20, "+55 11 98765-4321"),  # 1/1 at 0.25, rounded up: 0.26
              record("mob-d", "c1", 30, 2, 15, "987654321"),  # 0.165, half even: 0.16
              record("mob-c", "c1", 90, 2, 10, "987654321"),  # 0.495, half even: 0.50
              record("mob-b", "c1", 300, 2, 5, "987654321"),
              record("mob-a", "c1", 300, 2, 0, "987654321")]
    local = [record(f"loc{d}", "c2", 95, d, 0, "33334444", "call.local") for d in (10, 15, 16, 20)]
    local.append(record("short", "c2", 20, 11, 0, "33334444", "call.local"))  # billed as the 30 s minimum
    tokens = {"id": "tok", "customer": "c1", "kind": "llm.input_tokens", "quantity": 123457,
              "occurred_at": datetime(2025, 12, 3, tzinfo=SAO_PAULO).isoformat(), "attributes": {"model": "GPT-4o"}}
    ingest_three_ways([long_distance + mobile, local + [tokens]], batch=3)
    charged = dict(UsageRecord.objects.filter(tenant__slug="imp").values_list("external_id", "charged_amount"))
    assert [charged[f"ld{s}"] for s in (7, 11, 13, 29, 41)] == [  # 0.17 a minute, rounded down
        Decimal("0.01"), Decimal("0.03"), Decimal("0.03"), Decimal("0.08"), Decimal("0.11")]
    assert [charged[i] for i in ("mob-a", "mob-b", "mob-c", "mob-d", "mob-e")] == [
        0, 0, Decimal("0.50"), Decimal("0.16"), Decimal("0.26")]
    assert UsageRecord.objects.get(tenant__slug="imp", external_id="short").billable_quantity == 30
    assert UsageRecord.objects.get(tenant__slug="imp", external_id="mob-a").batch_id is not None


def call(record_id: str, seconds: int, day: int, customer: str = "c1", destination: str = "33334444") -> dict:
    return {"id": record_id, "customer": customer, "kind": "call", "quantity": seconds,
            "occurred_at": datetime(2025, 12, day, 10, tzinfo=SAO_PAULO).isoformat(), "destination": destination}


def test_an_import_leaves_a_summary_with_waiting_usage_to_the_workers(postgres, api_usage_waits_for_the_workers):
    """Records that arrived first are charged first: an import does not fold a summary in place
    while earlier records of it still wait for a worker."""
    tenant = make_tenant("order")
    ingest_in_sql(tenant=tenant, records=[call("api-1", 540, 20)])  # waits; later in the month
    report = import_usage(tenant=tenant, records=[call("file-1", 540, 2), call("file-2", 60, 3, customer="c2")])
    assert report.counts["accepted"] == 2
    status = dict(UsageRecord.objects.values_list("external_id", "status"))
    assert status == {"api-1": "rated", "file-1": "rated", "file-2": "billed"}  # c2's summary had nothing waiting
    fold_all_pending(batch_size=1000)
    # folded in time order within the summary: file-1 (day 2) takes 540 s of the 600 s allowance
    used = dict(UsageRecord.objects.values_list("external_id", "allowance_used"))
    assert (used["file-1"], used["api-1"]) == (Decimal(540), Decimal(60))
    assert find_differences(tenant=tenant) == []


def test_an_api_call_charges_in_place_the_summaries_nothing_waits_in(postgres):
    """Like an import chunk, an API call folds its records itself, in time order, where no record
    of the summary still waits for a worker and no wallet or tiers are involved."""
    tenant = make_tenant("in-place")
    with override_settings(TARIFA_API_FOLD_IN_PLACE=False):
        ingest_in_sql(tenant=tenant, records=[call("early", 540, 20)])  # c1's summary has usage waiting
    prepaid = call("wallet", 60, 4, customer="c4")
    answers = ingest_in_sql(tenant=tenant, records=[
        call("c1-late", 120, 2), call("c2-a", 120, 3, customer="c2"), call("c2-b", 540, 1, customer="c2"), prepaid])
    assert {a.status for a in answers.results} == {"accepted"}
    records = {r.external_id: r for r in UsageRecord.objects.filter(tenant=tenant)}
    assert {i: r.status for i, r in records.items()} == {
        "early": "rated", "c1-late": "rated", "c2-a": "billed", "c2-b": "billed", "wallet": "rated"}
    # c2-b, sent after c2-a but earlier in the month, took the allowance first
    assert (records["c2-b"].allowance_used, records["c2-a"].allowance_used) == (Decimal(540), Decimal(60))
    assert records["c2-a"].charged_amount == Decimal("0.13")  # 60 s beyond the allowance at 0.13 a minute
    batch = FoldBatch.objects.get(id=records["c2-a"].batch_id)
    assert (batch.folded_by, batch.record_count, records["c2-b"].batch_id) == ("api", 2, batch.id)
    c2 = Summary.objects.get(tenant=tenant, customer__external_id="c2")
    assert (c2.record_count, c2.total_amount) == (2, Decimal("0.13"))
    assert set(PendingSummary.objects.values_list("summary__customer__external_id", flat=True)) == {"c1", "c4"}
    fold_all_pending(batch_size=1000)
    used = dict(UsageRecord.objects.values_list("external_id", "allowance_used"))
    assert (used["c1-late"], used["early"]) == (Decimal(120), Decimal(480))  # the workers' fold, in time order
    assert UsageRecord.objects.get(external_id="wallet").status == "billed"
    assert find_differences(tenant=tenant) == []


def test_an_api_call_whose_usage_overflows_a_summary_stores_it_for_the_fold_to_set_aside(postgres):
    """A summary that cannot hold a call's records would fail the call in its fold: the records are
    stored unfolded instead, and the workers' fold sets aside the summary's."""
    tenant = make_tenant("overflow")
    tokens = [{"id": f"t{i}", "customer": "c1", "kind": "llm.input_tokens", "quantity": "99999999999999999",
               "occurred_at": datetime(2025, 12, 1, 10, i, tzinfo=SAO_PAULO).isoformat()} for i in range(12)]
    answers = ingest_in_sql(tenant=tenant, records=tokens + [call("ok", 60, 2, customer="c2")])
    assert {a.status for a in answers.results} == {"accepted"}
    assert set(UsageRecord.objects.values_list("status", flat=True)) == {"rated"}
    fold_all_pending(batch_size=1000)
    assert set(UsageRecord.objects.values_list("customer_ref", "status", "unrated_reason")) == {
        ("c1", "unrated", "summary_out_of_range"), ("c2", "billed", "")}
    assert find_differences(tenant=tenant) == []


def test_imported_duplicates_and_conflicts_across_chunks(postgres):
    tenant = make_tenant("dups")
    records = [call("a", 60, 1), call("b", 60, 2), call("a", 60, 1), call("b", 61, 2), call("c", 60, 3)]
    report = import_usage(tenant=tenant, records=records, chunk_size=2)
    assert (report.counts["accepted"], report.counts["duplicate"], report.counts["conflict"]) == (3, 1, 1)
    assert [p.id for p in report.problems] == ["b"]
    again = import_usage(tenant=tenant, records=records[:2])
    assert again.counts["duplicate"] == 2
    assert UsageRecord.objects.filter(tenant=tenant).count() == 3
    assert Summary.objects.get(tenant=tenant, customer__external_id="c1").record_count == 3


def test_a_resent_id_is_compared_by_its_stored_columns_whatever_hash_was_stored(postgres):
    """PostgreSQL hashes a stored record's columns when its id is sent again, and stores no hash:
    records stored by the Python path (or before, with its hash) are duplicates of the same
    content, and conflicts of another."""
    tenant = make_tenant("old")
    sent = [call("old-1", 60, 1), {**call("old-2", "12.50", 2), "attributes": {"b": [1, "é"], "a": None}}]
    ingest_in_python(tenant=tenant, records=copy.deepcopy(sent))  # the Python path's hash stored
    assert [r.status for r in ingest_in_sql(tenant=tenant, records=copy.deepcopy(sent)).results] == ["duplicate"] * 2
    changed = [{**sent[0], "quantity": 61}, {**sent[1], "attributes": {"b": [1, "e"], "a": None}}]
    assert [r.status for r in ingest_in_sql(tenant=tenant, records=changed).results] == ["conflict"] * 2
    fresh = [call("new-1", "12.5", 3)]
    assert [r.status for r in ingest_in_sql(tenant=tenant, records=copy.deepcopy(fresh)).results] == ["accepted"]
    assert UsageRecord.objects.get(external_id="new-1").content_hash == ""
    again = [call("new-1", "12.500", 3), {**call("new-1", "12.5", 3), "destination": "11999990000"}]
    assert [r.status for r in ingest_in_sql(tenant=tenant, records=again).results] == ["duplicate", "conflict"]


@pytest.mark.parametrize("zone", ["America/New_York", "Europe/Dublin", "Australia/Lord_Howe", "America/Sao_Paulo"])
def test_local_cdr_times_resolve_as_postgresql_resolves_them(postgres, zone):
    """Asterisk writes local wall-clock times; a DST change repeats or skips some of them. SQLite's
    path (Python) and PostgreSQL's (SQL) must place each at the same instant."""
    from django.db import connection

    from tarifa.metering.importers import _local_time

    tz = ZoneInfo(zone)
    texts = [f"{year}-{month:02d}-{day:02d} {hour:02d}:{minute:02d}:00" for year in (2018, 2025)
             for month, days in ((2, (16, 17, 18)), (3, (8, 9, 30, 31)), (4, (5, 6)), (10, (5, 6, 26, 27)),
                                 (11, (1, 2, 3, 4))) for day in days for hour in (0, 1, 2, 3) for minute in (0, 30)]
    with connection.cursor() as cursor:
        cursor.execute("SELECT t::timestamp AT TIME ZONE %s FROM unnest(%s::text[]) t", [zone, texts])
        expected = [row[0] for row in cursor.fetchall()]
    # compared in UTC: Python never finds a repeated wall-clock time equal to a time in another zone
    assert [_local_time(text, tz).astimezone(timezone.utc) for text in texts] == expected


def test_an_import_emits_summary_events_debounced_except_at_thresholds(postgres):
    from tarifa.events.models import Event

    tenant = make_tenant("events")
    import_usage(tenant=tenant, records=[call("e1", 60, 1), call("e2", 60, 2, customer="c2")])
    first = list(Event.objects.filter(tenant=tenant, type="summary.updated"))
    assert sorted(e.payload["customer"] for e in first) == ["c1", "c2"]  # never emitted before
    # c1 passes 50% of its 600 s allowance; c2's summary changes quietly (debounced, the sweep emits it)
    import_usage(tenant=tenant, records=[call("e3", 300, 3), call("e4", 30, 4, customer="c2")])
    later = Event.objects.filter(tenant=tenant, type="summary.updated").exclude(id__in=[e.id for e in first])
    assert [(e.payload["customer"], e.payload["allowance_threshold_crossed"]) for e in later] == [("c1", True)]


def test_a_statement_runs_with_its_settings_alone_in_one_round_trip(postgres):
    def current(cursor) -> tuple:
        cursor.execute("SELECT current_setting('enable_sort'), current_setting('lock_timeout')")
        return cursor.fetchone()

    with transaction.atomic(), postgres.cursor() as wrapper:
        cursor = wrapper.cursor
        before = current(cursor)
        rows = bulk.execute_with_settings(
            cursor, "SELECT current_setting('enable_sort'), current_setting('lock_timeout'), %(n)s::int",
            {"n": 7}, settings={"enable_sort": "off", "lock_timeout": "2s"})
        assert rows == [("off", "2s", 7)]
        assert current(cursor) == before
        assert bulk.execute_with_settings(cursor, "SELECT 1 WHERE false", settings={"enable_sort": "off"}) == []
        assert bulk.execute_with_settings(cursor, "SET LOCAL work_mem = '8MB'", settings={}) is None
        # A failing statement: the rollback to the savepoint before it puts the settings back.
        sid = transaction.savepoint()
        with pytest.raises(Exception, match="division by zero"):
            bulk.execute_with_settings(cursor, "SELECT 1 / 0", settings={"enable_sort": "off"})
        transaction.savepoint_rollback(sid)
        assert current(cursor) == before
        with pytest.raises(ValueError, match="not a setting name"):
            bulk.execute_with_settings(cursor, "SELECT 1", settings={"lock_timeout": "1s'; DROP TABLE x; --"})
