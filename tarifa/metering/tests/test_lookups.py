"""The `__any` lookup (tarifa.core.lookups): the rows of `__in`, with one array parameter on PostgreSQL."""

from __future__ import annotations

import pytest
from django.db import connection

from tarifa.metering.models import PendingSummary, Summary
from tarifa.tenants.models import Customer
from tarifa.tenants.services import create_tenant


@pytest.mark.django_db
def test_any_selects_and_deletes_what_in_does_on_plain_and_related_fields():
    tenant, _issued = create_tenant(name="any", slug="any")
    customer = Customer.objects.create(tenant=tenant, external_id="c1")
    ids = [Summary.objects.create(tenant=tenant, customer=customer, period=f"2025-{m:02d}", currency="BRL").id
           for m in range(1, 6)]
    PendingSummary.objects.bulk_create([PendingSummary(summary_id=i) for i in ids])
    wanted = [ids[0], ids[3], 999_999]

    assert sorted(Summary.objects.filter(id__any=wanted).values_list("id", flat=True)) == [ids[0], ids[3]]
    assert list(Summary.objects.filter(id__any=[])) == []
    assert sorted(PendingSummary.objects.filter(summary__any=set(wanted)).values_list("summary_id", flat=True)) \
        == [ids[0], ids[3]]
    sql, params = PendingSummary.objects.filter(summary_id__any=wanted).query.sql_with_params()
    if connection.vendor == "postgresql":
        assert "= ANY(%s::bigint[])" in sql and params == ("{%d,%d,999999}" % (ids[0], ids[3]),)
    else:
        assert " IN (" in sql and len(params) == 3

    assert PendingSummary.objects.filter(summary_id__any=wanted).delete()[0] == 2
    assert sorted(PendingSummary.objects.values_list("summary_id", flat=True)) == [ids[1], ids[2], ids[4]]
