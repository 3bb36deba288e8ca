"""What /metrics tells an operator about metering: records in by outcome, records folded, and the
backlog (waiting records, the fold's lag, unrated records by reason)."""

from __future__ import annotations

import re
from datetime import timedelta

import pytest
from django.db import connection
from django.test import Client
from django.utils import timezone

from tarifa.metering.importers import Unreadable
from tarifa.metering.models import PendingSummary
from tarifa.metering.selectors import usage_backlog
from tarifa.metering.services.folding import fold_all_pending
from tarifa.metering.services.importing import import_usage
from tarifa.metering.services.ingestion import ingest_usage

from .conftest import at, call

# The backlog is what API calls leave to the fold workers.
pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("api_usage_waits_for_the_workers")]


def scrape() -> dict[str, float]:
    text = Client().get("/metrics").content.decode()
    return {name: float(value) for name, value in re.findall(r"^(tarifa_(?:usage|fold)\S*) (\S+)$", text, re.M)}


def test_metrics_count_records_by_outcome_and_show_the_backlog(customers, django_capture_on_commit_callbacks):
    tenant = customers[0].tenant
    before = scrape()
    with django_capture_on_commit_callbacks(execute=True):  # counted once committed
        ingest_usage(tenant=tenant, records=[
            call("a", "c1", 60, at(1)), call("b", "c1", 60, at(1, 1)), call("a", "c1", 60, at(1)),
            call("x", "nobody", 60, at(1)), {"id": "bad"}])
        import_usage(tenant=tenant, records=[call("c", "c2", 30, at(2)), Unreadable(id="line-2", _error="unreadable")])
    marked = PendingSummary.objects.order_by("marked_at").first()
    PendingSummary.objects.filter(pk=marked.pk).update(marked_at=timezone.now() - timedelta(seconds=90))
    during = scrape()

    def added(name: str, snapshot: dict) -> float:
        return snapshot.get(name, 0.0) - before.get(name, 0.0)

    assert added('tarifa_usage_records_total{outcome="accepted"}', during) == 4  # a, b, x (unrated), c
    assert added('tarifa_usage_records_total{outcome="duplicate"}', during) == 1
    assert added('tarifa_usage_records_total{outcome="rejected"}', during) == 2  # no fields; unreadable line
    # On PostgreSQL the import folds its chunk as it stores it: only the API's records wait.
    in_place = connection.vendor == "postgresql"
    assert during["tarifa_usage_waiting_records"] == (2 if in_place else 3)
    assert during["tarifa_fold_waiting_summaries"] == (1 if in_place else 2)
    assert added("tarifa_usage_folded_total", during) == (1 if in_place else 0)
    assert 90 <= during["tarifa_fold_lag_seconds"] < 120
    assert during['tarifa_usage_unrated_records{reason="unknown_customer"}'] == 1
    with django_capture_on_commit_callbacks(execute=True):
        fold_all_pending(batch_size=1000)
    after = scrape()
    assert added("tarifa_usage_folded_total", after) == 3
    assert after["tarifa_usage_waiting_records"] == 0 and after["tarifa_fold_lag_seconds"] == 0


def test_a_fold_rolled_back_counts_nothing(customers, django_capture_on_commit_callbacks):
    from django.db import transaction

    ingest_usage(tenant=customers[0].tenant, records=[call("a", "c1", 60, at(1))])
    before = scrape().get("tarifa_usage_folded_total", 0.0)
    with django_capture_on_commit_callbacks(execute=True):
        with pytest.raises(RuntimeError), transaction.atomic():
            fold_all_pending(batch_size=1000)
            raise RuntimeError("the caller's transaction fails after the fold")
    assert scrape().get("tarifa_usage_folded_total", 0.0) == before
    assert usage_backlog().waiting == 1
