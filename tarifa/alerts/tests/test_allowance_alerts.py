from __future__ import annotations

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from tarifa.alerts.models import Alert
from tarifa.alerts import services as alert_services
from tarifa.alerts.services import check_allowance_alerts
from tarifa.events.models import Event
from tarifa.metering.models import Summary
from tarifa.metering.services.folding import fold_all_pending
from tarifa.metering.services.ingestion import ingest_usage
from tarifa.metering.tests.conftest import at, call, customers, plan  # noqa: F401 (fixtures)
from tarifa.runtime.models import Job
from tarifa.runtime.testing import drain

pytestmark = pytest.mark.django_db


def _use(customers, seconds: list[int], prefix: str):
    tenant = customers[0].tenant
    ingest_usage(tenant=tenant, records=[call(f"{prefix}{i}", "c1", s, at(1, i)) for i, s in enumerate(seconds)])
    fold_all_pending(batch_size=1000)


def test_thresholds_raise_once_each_as_events_after_the_fold(customers):
    _use(customers, [300], "a")  # 300 of 600 s: 50 %
    assert Alert.objects.count() == 0  # the check is its own job, not part of the fold
    drain()
    assert list(Alert.objects.values_list("data__threshold", flat=True)) == [50]
    _use(customers, [30], "b")  # 330 s: still 55 %, nothing new — and no check job is spent on it
    assert not Job.objects.filter(type="events.run_listener", status="queued").exists()
    assert Event.objects.filter(type="summary.updated").count() == 1  # debounced: the sweep emits it later
    drain()
    assert Alert.objects.count() == 1
    _use(customers, [400], "c")  # 600 s: 80 % and 100 % at once
    drain()
    assert sorted(Alert.objects.values_list("data__threshold", flat=True)) == [50, 80, 100]
    assert Event.objects.filter(type="alert.raised").count() == 3
    alert = Alert.objects.get(data__threshold=100)
    assert alert.type == "allowance.threshold" and alert.customer.external_id == "c1"
    assert "100" in alert.message and alert.key.endswith(":100")


def test_repeated_checks_and_retries_never_duplicate(customers):
    _use(customers, [600], "a")
    summary = Summary.objects.get()
    for _ in range(3):
        check_allowance_alerts(summary_ids=[summary.id])
    drain()
    assert Alert.objects.count() == 3
    assert Event.objects.filter(type="alert.raised").count() == 3


def test_one_check_job_raises_the_alerts_of_every_summary_a_fold_crossed(customers):
    tenant = customers[0].tenant
    ingest_usage(tenant=tenant, records=[call(f"r{c}", c, seconds, at(1))
                                         for c, seconds in (("c1", 300), ("c2", 500), ("c3", 600))])
    fold_all_pending(batch_size=1000)
    assert Job.objects.filter(type="events.run_listener", status="queued").count() == 1
    first, *others = Summary.objects.order_by("id").values_list("id", flat=True)
    with CaptureQueriesContext(connection) as one_summary:
        check_allowance_alerts(summary_ids=[first])
    Alert.objects.all().delete()
    Event.objects.filter(type="alert.raised").delete()
    with CaptureQueriesContext(connection) as three_summaries:
        raised = check_allowance_alerts(summary_ids=[first, *others])
    assert len(three_summaries) == len(one_summary)  # a fixed number of queries, not one per alert
    assert sorted((a.customer.external_id, a.data["threshold"]) for a in raised) == [
        ("c1", 50), ("c2", 50), ("c2", 80), ("c3", 50), ("c3", 80), ("c3", 100)]
    drain()  # the queued job finds them raised
    assert Alert.objects.count() == 6 and Event.objects.filter(type="alert.raised").count() == 6


def test_a_clash_with_a_concurrent_raiser_raises_only_the_missing_alerts(customers, monkeypatch):
    """The bulk insert meets a key that another raiser stored after this one looked: each alert is
    then tried on its own, and only the missing ones are raised."""
    _use(customers, [600], "a")
    summary = Summary.objects.get()
    check_allowance_alerts(summary_ids=[summary.id])
    Alert.objects.filter(data__threshold__in=[50, 100]).delete()
    Event.objects.all().delete()
    looks = []

    def first_look_misses_the_stored_alert(alerts):
        looks.append(alerts)
        return list(alerts) if len(looks) == 1 else real_look(alerts)

    real_look = alert_services._not_yet_raised
    monkeypatch.setattr(alert_services, "_not_yet_raised", first_look_misses_the_stored_alert)
    raised = check_allowance_alerts(summary_ids=[summary.id])
    assert sorted(a.data["threshold"] for a in raised) == [50, 100]
    assert sorted(Alert.objects.values_list("data__threshold", flat=True)) == [50, 80, 100]
    assert Event.objects.filter(type="alert.raised").count() == 2


def test_plan_thresholds_are_configurable(customers, plan):
    plan.alert_thresholds = [90]
    plan.save()
    _use(customers, [550], "a")
    drain()
    assert Alert.objects.count() == 1 and Alert.objects.get().data["threshold"] == 90


def test_a_failing_alert_check_does_not_touch_the_fold(customers, monkeypatch):
    def broken(**_):
        raise RuntimeError("alert store down")

    monkeypatch.setattr("tarifa.alerts.listeners.check_allowance_alerts", broken)
    _use(customers, [600], "a")
    drain()
    assert Summary.objects.get().total_amount == 0 and Summary.objects.get().record_count == 1
    job = Job.objects.get(type="events.run_listener")
    assert job.status == "queued" and "alert store down" in job.last_error


def test_alerts_api_lists_and_filters(api, customers, make_api):
    _use(customers, [600], "a")
    drain()
    body = api.get("/api/v1/alerts", customer="c1").json()
    assert len(body["items"]) == 3 and body["items"][0]["customer"] == "c1"
    assert api.get("/api/v1/alerts", type="wallet.low_balance").json()["items"] == []
    assert len(api.get("/api/v1/alerts", type="allowance.threshold", customer="c1").json()["items"]) == 3
    # Typos had answered an empty list, which reads as "no alerts".
    typo = api.get("/api/v1/alerts", type="allowance_threshold")
    assert typo.status_code == 422 and typo.json()["field"] == "type"
    unknown = api.get("/api/v1/alerts", customer="c-1")
    assert unknown.status_code == 404 and unknown.json()["code"] == "customer_not_found"
    _, other = make_api("Other")
    assert other.get("/api/v1/alerts").json()["items"] == []


@pytest.mark.django_db(transaction=True)
def test_concurrent_checks_raise_each_alert_once_on_postgres(postgres, tenant, customers):
    from tarifa.runtime.testing import run_in_threads

    _use(customers, [600], "a")
    summary = Summary.objects.get()
    run_in_threads(lambda _i: check_allowance_alerts(summary_ids=[summary.id]), 4)
    assert Alert.objects.count() == 3
    assert Event.objects.filter(type="alert.raised").count() == 3
