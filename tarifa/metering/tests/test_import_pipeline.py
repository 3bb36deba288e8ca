"""A file import on PostgreSQL with two database connections (`importing._import_staged`): one
chunk is rated while the chunk before it is stored, and the outcome is what one connection,
one chunk at a time, stores."""

from __future__ import annotations

import copy
import random
import threading
from datetime import timedelta

import pytest
from django.db import connection

from tarifa.metering.models import UsageRecord
from tarifa.metering.services import bulk
from tarifa.metering.services.folding import fold_all_pending
from tarifa.metering.services.importing import import_usage
from tarifa.metering.services.reconciliation import find_differences
from tarifa.metering.tests.test_bulk import (
    CUSTOMERS, DESTINATIONS, KINDS, MONTH_START, _balances_of, _records_of, _summaries_of, call, make_tenant,
)

pytestmark = pytest.mark.django_db(transaction=True)


def _records(count: int, *, seed: int) -> list[dict]:
    """Random records whose ids repeat (duplicates and conflicts across chunks) and whose calls
    cross the allowance of their summaries, so the order of storing matters."""
    rng = random.Random(seed)
    records = [{"id": f"r{rng.randrange(count * 2)}", "customer": rng.choice(["c1", "c1", "c2", *CUSTOMERS[2:]]),
                "kind": rng.choice(["call"] * 4 + KINDS), "quantity": rng.randrange(0, 900),
                "occurred_at": (MONTH_START + timedelta(minutes=7 * rng.randrange(-90, 60 * 24 * 40))).isoformat(),
                "destination": rng.choice(DESTINATIONS)} for _ in range(count)]
    for i in rng.sample(range(1, count), count // 10):  # sent again, further down the file
        records[i] = dict(records[rng.randrange(i)])
    return records


def _threads_storing(monkeypatch) -> set[str]:
    names: set[str] = set()
    store_stage = bulk.store_stage

    def spy(**kwargs):
        names.add(threading.current_thread().name)
        return store_stage(**kwargs)

    monkeypatch.setattr(bulk, "store_stage", spy)
    return names


def test_two_connections_store_what_one_connection_stores(postgres, settings, monkeypatch):
    records = _records(700, seed=11)
    one, two = make_tenant("one"), make_tenant("two")
    settings.TARIFA_IMPORT_CONNECTIONS = 1
    first = import_usage(tenant=one, records=copy.deepcopy(records), chunk_size=37)
    settings.TARIFA_IMPORT_CONNECTIONS = 2
    storing = _threads_storing(monkeypatch)
    second = import_usage(tenant=two, records=copy.deepcopy(records), chunk_size=37)

    assert len(storing) == 2  # both connections stored chunks
    assert second.counts == first.counts
    assert first.counts["duplicate"] and first.counts["conflict"] and first.counts["rejected"] == 0
    assert [(p.id, p.code) for p in second.problems] == [(p.id, p.code) for p in first.problems]
    fold_all_pending(batch_size=1000)  # what the import left to the workers (prepaid, tiers, unrated)
    assert _records_of(two) == _records_of(one)
    assert _summaries_of(two) == _summaries_of(one)
    assert _balances_of(two) == _balances_of(one)
    assert find_differences(tenant=one) == find_differences(tenant=two) == []


def test_a_failed_chunk_stops_the_import_after_the_chunks_before_it(postgres, settings, monkeypatch):
    settings.TARIFA_IMPORT_CONNECTIONS = 2
    tenant = make_tenant("broken")
    records = [call(f"f{i:02d}", 60, 1 + i % 28) for i in range(50)]
    store_stage = bulk.store_stage

    def third_chunk_breaks(**kwargs):
        with connection.cursor() as cursor:
            cursor.execute("SELECT min(seq) FROM usage_stage")
            if (cursor.fetchone()[0] - 1) // 5 + 1 == 3:
                raise RuntimeError("chunk 3 broke")
        return store_stage(**kwargs)

    monkeypatch.setattr(bulk, "store_stage", third_chunk_breaks)
    with pytest.raises(RuntimeError, match="chunk 3 broke"):
        import_usage(tenant=tenant, records=copy.deepcopy(records), chunk_size=5)
    stored = sorted(UsageRecord.objects.filter(tenant=tenant).values_list("external_id", flat=True))
    assert stored == [f"f{i:02d}" for i in range(10)]  # chunks 1 and 2 committed, none after the failure

    monkeypatch.setattr(bulk, "store_stage", store_stage)
    again = import_usage(tenant=tenant, records=copy.deepcopy(records), chunk_size=5)  # running it again finishes
    assert (again.counts["accepted"], again.counts["duplicate"]) == (40, 10)
    assert find_differences(tenant=tenant) == []


def test_a_file_that_breaks_off_keeps_the_chunks_read_before_it(postgres, settings):
    settings.TARIFA_IMPORT_CONNECTIONS = 2
    tenant = make_tenant("cut")

    def records():
        for i in range(12):
            yield call(f"g{i:02d}", 60, 1 + i)
        raise ValueError("line 13: unreadable")

    with pytest.raises(ValueError, match="line 13"):
        import_usage(tenant=tenant, records=records(), chunk_size=5)
    stored = sorted(UsageRecord.objects.filter(tenant=tenant).values_list("external_id", flat=True))
    assert stored == [f"g{i:02d}" for i in range(10)]  # the two whole chunks; the partial third is not stored
    assert find_differences(tenant=tenant) == []
