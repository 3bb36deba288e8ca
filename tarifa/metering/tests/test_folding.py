from __future__ import annotations

import random
from decimal import ROUND_HALF_UP, Decimal

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from hypothesis import HealthCheck, given, settings, strategies as st

from tarifa.metering.models import FoldBatch, Summary, SummaryLine, UsageRecord
from tarifa.metering.services.folding import fold_all_pending
from tarifa.metering.services.ingestion import ingest_usage
from tarifa.metering.services.reconciliation import find_differences
from tarifa.metering.tests.conftest import at, call
from tarifa.runtime.models import Job
from tarifa.runtime.testing import drain

# The workers' fold, fed by API calls that leave their usage to it.
pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("api_usage_waits_for_the_workers")]
PRICES = {"33334444": Decimal("0.10"), "987654321": Decimal("0.30")}


def fold_all(batch_size: int = 1000) -> None:
    fold_all_pending(batch_size=batch_size)


def summary_of(customer: str, period: str = "2025-12") -> dict:
    summary = Summary.objects.get(customer__external_id=customer, period=period)
    return {
        "total": summary.total_amount, "count": summary.record_count,
        "lines": {l.kind: (l.record_count, l.quantity, l.billable_quantity, l.allowance_used, l.charged_amount)
                  for l in summary.lines.all()},
        "allowance": {u.allowance.code: u.used for u in summary.allowance_usage.all()},
    }


def naive_fold(calls: list[tuple[int, str]], allowance: int = 600) -> tuple[list[Decimal], Decimal]:
    """The rules as a person applies them, record by record in time order: 30/6 increments, the
    shared allowance consumed first, the rest priced per minute and rounded half-up to cents."""
    remaining, charges = allowance, []
    for seconds, destination in calls:
        billed = 0 if seconds == 0 else max(30, 30 + -(-(seconds - 30) // 6) * 6)
        covered = min(remaining, billed)
        remaining -= covered
        amount = (Decimal(billed - covered) / 60 * PRICES[destination]).quantize(Decimal("0.01"), ROUND_HALF_UP)
        charges.append(amount)
    return charges, sum(charges, Decimal(0))


def test_known_month_with_allowance_boundary(customers):
    # 600 s allowance shared by local and mobile; the third call crosses it.
    ingest_usage(tenant=customers[0].tenant, records=[
        call("a", "c1", 290, at(1, 0)),               # billed 294, covered 294
        call("b", "c1", 100, at(1, 1), "987654321"),  # billed 102, covered 102 (396 used)
        call("c", "c1", 250, at(1, 2)),               # billed 252, covered 204, charged 48 s = 0.08
        call("d", "c1", 31, at(1, 3), "987654321"),   # billed 36, charged 0.18
        call("e", "c1", 61, at(1, 4), "0021551199"),  # international 60/60: 120 s at R$1/min = 2.00
    ])
    fold_all()
    summary = summary_of("c1")
    assert summary["lines"] == {
        "call.local": (2, Decimal(540), Decimal(546), Decimal(498), Decimal("0.08")),
        "call.mobile": (2, Decimal(131), Decimal(138), Decimal(102), Decimal("0.18")),
        "call.international": (1, Decimal(61), Decimal(120), Decimal(0), Decimal("2.00")),
    }
    assert summary["total"] == Decimal("2.26") and summary["count"] == 5
    assert summary["allowance"] == {"minutes": Decimal(600)}
    record = UsageRecord.objects.get(external_id="c")
    assert (record.status, record.allowance_used, record.charged_amount) == ("billed", Decimal(204), Decimal("0.08"))
    assert record.batch_id == FoldBatch.objects.get().id and FoldBatch.objects.get().record_count == 5
    assert find_differences() == []


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    calls=st.lists(st.tuples(st.integers(0, 400), st.sampled_from(["33334444", "987654321"])), min_size=1, max_size=40),
    batch_size=st.integers(1, 15),
    seed=st.integers(0, 1000),
)
def test_folding_matches_the_naive_rules_whatever_the_batches_and_arrival(customers, calls, batch_size, seed):
    tenant = customers[0].tenant
    UsageRecord.objects.all().delete()
    Summary.objects.all().delete()
    records = [call(f"r{i}", "c1", seconds, at(1, i), dest) for i, (seconds, dest) in enumerate(calls)]
    arrival = records[:]
    random.Random(seed).shuffle(arrival)
    for start in range(0, len(arrival), 7):  # arrives in shuffled chunks
        ingest_usage(tenant=tenant, records=arrival[start:start + 7])
    fold_all(batch_size=batch_size)
    charges, total = naive_fold(calls)
    stored = dict(UsageRecord.objects.values_list("external_id", "charged_amount"))
    assert [stored[f"r{i}"] for i in range(len(calls))] == charges
    assert Summary.objects.get().total_amount == total
    assert find_differences() == []


def test_folds_interleaved_with_arrivals_agree_with_processing_order(customers):
    """Records folded before later ones arrive consume the allowance first (processing order)."""
    tenant = customers[0].tenant
    ingest_usage(tenant=tenant, records=[call("late-in-time", "c1", 600, at(2))])
    fold_all()
    ingest_usage(tenant=tenant, records=[call("early-in-time", "c1", 600, at(1))])
    fold_all()
    charged = dict(UsageRecord.objects.values_list("external_id", "charged_amount"))
    assert charged == {"late-in-time": Decimal("0.00"), "early-in-time": Decimal("1.00")}
    assert find_differences() == []


def test_full_batch_queues_a_fold_and_the_sweep_folds_the_rest(customers, settings):
    settings.TARIFA_FOLD_BATCH_SIZE = 5
    tenant = customers[0].tenant
    ingest_usage(tenant=tenant, records=[call(f"x{i}", "c1", 30, at(1, i)) for i in range(4)])
    assert not Job.objects.filter(type="metering.fold").exists()  # not a full batch yet
    ingest_usage(tenant=tenant, records=[call(f"y{i}", "c1", 30, at(2, i)) for i in range(6)])
    assert Job.objects.filter(type="metering.fold").count() == 2  # 10 waiting: two full batches
    ingest_usage(tenant=tenant, records=[call("z", "c2", 30, at(2))])
    assert Job.objects.filter(type="metering.fold").count() == 2  # 11 waiting: still two
    drain()
    assert UsageRecord.objects.filter(status="billed").count() == 11
    assert summary_of("c1")["count"] == 10 and summary_of("c2")["count"] == 1
    # A lone record never fills a batch: the periodic sweep folds it.
    ingest_usage(tenant=tenant, records=[call("lone", "c3", 30, at(3))])
    assert not Job.objects.filter(type="metering.fold", status="queued").exists()
    from tarifa.runtime.services import enqueue

    enqueue("metering.sweep")
    drain()
    assert UsageRecord.objects.filter(status="rated").count() == 0
    assert summary_of("c3")["count"] == 1


def test_flush_batches_stats_then_flush(customers, capsys):
    tenant = customers[0].tenant
    ingest_usage(tenant=tenant, records=[call(f"r{i}", "c1", 30, at(1, i)) for i in range(3)]
                 + [call("n1", "c2", 30, at(1, 0, month=11))])
    call_command("revenue", "flush-batches", "--stats")
    out = capsys.readouterr().out
    assert "customer  month  year  records waiting  batches" in out
    assert "c1" in out and "2025" in out and "total: 2 summaries, 4 records waiting" in out
    assert UsageRecord.objects.filter(status="rated").count() == 4  # --stats folds nothing
    call_command("revenue", "flush-batches")
    assert "folded 4 records into 2 summaries" in capsys.readouterr().out
    assert UsageRecord.objects.filter(status="billed").count() == 4


def test_reconcile_detects_tampering_and_fix_rebuilds(customers, capsys):
    tenant = customers[0].tenant
    ingest_usage(tenant=tenant, records=[call(f"r{i}", "c1", 700, at(1, i)) for i in range(3)])
    fold_all()
    before = summary_of("c1")
    call_command("billing", "reconcile")
    assert "every summary equals" in capsys.readouterr().out
    SummaryLine.objects.filter(kind="call.local").update(charged_amount=Decimal("999"))
    with pytest.raises(SystemExit) as exit_info:
        call_command("billing", "reconcile", "--period", "2025-12")
    assert exit_info.value.code == 1
    assert "charged_amount" in capsys.readouterr().out
    call_command("billing", "reconcile", "--fix")
    assert "0 difference(s) remain" in capsys.readouterr().out
    assert summary_of("c1") == before


def test_a_mistyped_period_is_an_error_not_an_empty_success(customers, capsys):
    """A period matching nothing would make reconcile report no difference and rerate re-rate
    nothing, both with success."""
    tenant = customers[0].tenant
    for command in (["billing", "reconcile", "--period", "2025-13"],
                    ["usage", "rerate", "--tenant", tenant.slug, "--period", "12/2025"]):
        with pytest.raises(CommandError, match="^invalid_period: period must look like 2025-12") as error:
            call_command(*command)
        assert error.value.returncode == 2
        assert capsys.readouterr().out == ""  # nothing checked or printed first


def test_rerate_after_a_tariff_correction(customers, plan, capsys):
    from tarifa.metering.services.plans import replace_plan_terms

    tenant = customers[0].tenant
    ingest_usage(tenant=tenant, records=[call(f"r{i}", "c1", 660, at(1, i)) for i in range(2)])
    fold_all()
    assert summary_of("c1")["total"] == Decimal("1.20")  # 1320 s - 600 allowance = 12 min at 0.10
    replace_plan_terms(plan=plan, rates=[{"kind": "call.local", "price": "0.20", "unit": "second",
                                          "block_size": "60", "minimum": "30", "increment": "6"}],
                       allowances=[{"code": "minutes", "kinds": ["call.local"], "quantity": "300"}])
    call_command("usage", "rerate", "--tenant", tenant.slug, "--period", "2025-12")
    assert "billed=2" in capsys.readouterr().out
    assert summary_of("c1")["total"] == Decimal("3.40")  # 1320 - 300 = 17 min at 0.20
    assert summary_of("c1")["allowance"] == {"minutes": Decimal(300)}
    assert find_differences() == []


def test_a_rerate_that_leaves_a_summary_nothing_to_charge_empties_it(customers, plan):
    """The plan's call rates removed, then the month re-rated: every record becomes unrated
    (no_rate_for_kind), and the summary must hold nothing, not its old total."""
    from tarifa.metering.services.plans import replace_plan_terms
    from tarifa.metering.services.reconciliation import rerate_period

    tenant = customers[0].tenant
    ingest_usage(tenant=tenant, records=[call("r1", "c1", 900, at(1)), call("r2", "c1", 60, at(1, 1), "987654321")])
    fold_all()
    assert summary_of("c1")["total"] == Decimal("0.80")  # 300 s beyond the allowance at 0.10, 60 s at 0.30
    replace_plan_terms(plan=plan, rates=[{"kind": "llm.input_tokens", "unit": "token", "price": "0.50",
                                          "block_size": "1000000"}], allowances=[])
    assert rerate_period(tenant=tenant, period="2025-12")["unrated"] == 2
    assert (summary_of("c1")["total"], summary_of("c1")["count"], summary_of("c1")["lines"]) == (0, 0, {})
    assert find_differences() == []


def test_summaries_api_explains_the_charge(api, customers):
    api.post("/api/v1/usage", {"records": [call("a", "c1", 650, at(1)), call("b", "c1", 31, at(1, 1), "987654321")]})
    fold_all()
    body = api.get("/api/v1/customers/c1/summaries", period="2025-12").json()
    assert len(body) == 1
    summary = body[0]
    # a: 650 s → 654 billed, 600 from the allowance, 54 s at 0.10/min = 0.09; b: 36 s mobile = 0.18
    assert Decimal(summary["total_amount"]) == Decimal("0.27")
    assert Decimal(summary["wallet_paid_amount"]) == 0  # postpaid: the close invoices it all
    local = next(l for l in summary["lines"] if l["kind"] == "call.local")
    assert Decimal(local["minutes"]) == Decimal("10.83") and Decimal(local["allowance_used"]) == Decimal(600)
    assert summary["allowances"][0]["allowance"] == "minutes"
    assert Decimal(summary["allowances"][0]["percent_used"]) == Decimal(100)
    billed = api.get("/api/v1/usage", customer="c1", status="billed").json()["items"]
    record = next(r for r in billed if r["id"] == "b")
    assert record["rate"]["kind"] == "call.mobile" and record["rate"]["increment"] == "6.000000"
    assert Decimal(record["billable_quantity"]) == 36 and Decimal(record["allowance_used"]) == 0
    assert Decimal(record["charged_amount"]) == Decimal("0.18") and record["batch_id"]
    assert api.get("/api/v1/customers/zz/summaries").status_code == 404


def test_summary_events_are_debounced_and_the_sweep_catches_up(customers, settings):
    from tarifa.events.models import Event
    from tarifa.metering.services.folding import emit_stale_summary_events

    tenant = customers[0].tenant
    events = lambda: Event.objects.filter(type="summary.updated").count()  # noqa: E731
    ingest_usage(tenant=tenant, records=[call("a", "c1", 30, at(1))])
    fold_all()
    assert events() == 1  # first change: at once
    ingest_usage(tenant=tenant, records=[call("b", "c1", 30, at(1, 1))])
    fold_all()
    assert events() == 1  # within the quiet period: held back
    assert emit_stale_summary_events() == 1  # the sweep sends the latest state
    latest = Event.objects.filter(type="summary.updated").latest("id").payload
    assert latest["record_count"] == 2
    assert emit_stale_summary_events() == 0  # nothing changed since
    ingest_usage(tenant=tenant, records=[call("c", "c1", 600, at(1, 2))])
    fold_all()
    crossed = Event.objects.filter(type="summary.updated").latest("id").payload
    assert crossed["allowance_threshold_crossed"] is True  # a threshold crossing is never held back
    settings.TARIFA_SUMMARY_EVENT_SECONDS = 0
    ingest_usage(tenant=tenant, records=[call("d", "c2", 30, at(1))])
    fold_all()
    assert Event.objects.filter(type="summary.updated", payload__customer="c2").count() == 1


def test_queued_folds_are_capped(customers, settings):
    """At most MAX_QUEUED_FOLDS fold jobs wait, however many full batches are waiting."""
    from tarifa.metering.services.ingestion import MAX_QUEUED_FOLDS

    settings.TARIFA_FOLD_BATCH_SIZE = 1
    tenant = customers[0].tenant
    ingest_usage(tenant=tenant, records=[call(f"a{i}", "c1", 30, at(1, i)) for i in range(MAX_QUEUED_FOLDS - 2)])
    assert Job.objects.filter(type="metering.fold", status="queued").count() == MAX_QUEUED_FOLDS - 2
    ingest_usage(tenant=tenant, records=[call(f"b{i}", "c1", 30, at(2, i)) for i in range(5)])
    assert Job.objects.filter(type="metering.fold", status="queued").count() == MAX_QUEUED_FOLDS
    ingest_usage(tenant=tenant, records=[call("c", "c1", 30, at(3))])
    assert Job.objects.filter(type="metering.fold", status="queued").count() == MAX_QUEUED_FOLDS


def test_only_summaries_that_may_be_due_an_event_are_loaded_for_it(customers):
    from datetime import timedelta

    from django.utils import timezone

    from tarifa.metering.selectors import summaries_maybe_due_events

    now = timezone.now()
    never, old, recent, crossed = [
        Summary.objects.create(tenant=c.tenant, customer=c, period=period, currency="BRL", last_event_at=last)
        for c, period, last in [(customers[0], "2025-11", None), (customers[0], "2025-12", now - timedelta(minutes=5)),
                                (customers[1], "2025-12", now - timedelta(seconds=5)),
                                (customers[2], "2025-12", now - timedelta(seconds=5))]]
    due = summaries_maybe_due_events(ids=[never.id, old.id, recent.id, crossed.id], crossed={crossed.id},
                                     quiet_since=now - timedelta(seconds=60))
    assert [s.id for s in due] == sorted([never.id, old.id, crossed.id])
    assert due[0].customer.external_id  # loaded with its customer, for the payload


def test_a_fold_job_stopped_by_its_batch_limit_hands_over_what_is_left(tenant, customers, settings, monkeypatch):
    """Less than a batch left when a fold job reaches BATCHES_PER_JOB: a fresh job folds it,
    not the next sweep (the other workers' jobs may have ended on finding its summaries locked)."""
    from tarifa.metering import tasks
    from tarifa.runtime.worker import JobContext

    settings.TARIFA_FOLD_BATCH_SIZE = 10
    monkeypatch.setattr(tasks, "BATCHES_PER_JOB", 2)
    ingest_usage(tenant=tenant, records=[call(f"h{i}", "c1", 60, at(1, i)) for i in range(25)])
    Job.objects.filter(type="metering.fold").delete()  # the ones ingestion queued: this job runs alone
    tasks.fold(JobContext(job_id=1, type="metering.fold", attempt=1, max_attempts=20, worker_id="w"))
    assert UsageRecord.objects.filter(status="rated").count() == 5
    assert Job.objects.filter(type="metering.fold", status="queued").count() == 1
    drain()
    assert UsageRecord.objects.filter(status="rated").count() == 0


TOKENS_BEYOND = "99999999999999999"  # 10^17 - 1 tokens: eleven of them are more than a summary line holds


def _absurd_and_normal_usage(tenant) -> None:
    """c1: a call and twelve records of 10^17 tokens, which no summary line can add up (10^18);
    c2 and c3: calls. All in one summary per customer, all waiting for the same fold."""
    records = [{"id": f"t{i}", "customer": "c1", "kind": "llm.input_tokens", "quantity": TOKENS_BEYOND,
                "occurred_at": at(1, i).isoformat()} for i in range(12)]
    records += [call(f"ok{i}", f"c{i % 3 + 1}", 45, at(2, i)) for i in range(9)]
    assert ingest_usage(tenant=tenant, records=records).counts["accepted"] == 21


@pytest.mark.parametrize("fold_in_sql", [True, False])
def test_a_summary_that_cannot_hold_its_usage_is_set_aside_and_the_others_fold(tenant, customers, settings,
                                                                             fold_in_sql):
    """It had failed every fold batch that claimed it (PostgreSQL: numeric field overflow), and so
    the other customers' summaries claimed with it: their billing stopped too."""
    settings.TARIFA_FOLD_IN_SQL = fold_in_sql
    _absurd_and_normal_usage(tenant)
    result = fold_all_pending(batch_size=1000)
    assert (result.records, result.charged) == (6, Decimal("0"))  # c2, c3: 3 calls each, in the allowance
    statuses = {(r.customer_ref, r.status, r.unrated_reason) for r in UsageRecord.objects.all()}
    assert statuses == {("c1", "unrated", "summary_out_of_range"), ("c2", "billed", ""), ("c3", "billed", "")}
    assert summary_of("c1")["count"] == 0 and summary_of("c2")["count"] == summary_of("c3")["count"] == 3
    assert fold_all_pending(batch_size=1000).batches == 0  # nothing left waiting, no marker left behind
    assert find_differences(tenant=tenant) == []


def test_a_rerate_that_overflows_a_summary_says_so(tenant, customers, capsys):
    _absurd_and_normal_usage(tenant)
    fold_all_pending(batch_size=1000)
    with pytest.raises(CommandError, match="summary_out_of_range: Summaries .* cannot hold the usage"):
        call_command("usage", "rerate", "--period", "2025-12", "--tenant", tenant.slug)
