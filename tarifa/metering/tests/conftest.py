from __future__ import annotations

from datetime import date, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from tarifa.metering.services.plans import create_plan, subscribe
from tarifa.tenants.services import create_customer

SAO_PAULO = ZoneInfo("America/Sao_Paulo")
PER_MINUTE_30_6 = {"unit": "second", "block_size": "60", "minimum": "30", "increment": "6"}


@pytest.fixture
def plan(tenant):
    return create_plan(
        tenant=tenant, code="tel", name="Telephony", currency="BRL",
        rates=[
            {"kind": "call.local", "price": "0.10", **PER_MINUTE_30_6},
            {"kind": "call.mobile", "destination_prefix": "9", "price": "0.30", **PER_MINUTE_30_6},
            {"kind": "call.long_distance", "destination_prefix": "0", "price": "0.20", **PER_MINUTE_30_6},
            {"kind": "call.international", "destination_prefix": "00", "price": "1.00", "unit": "second",
             "block_size": "60", "minimum": "60", "increment": "60"},
            {"kind": "llm.input_tokens", "unit": "token", "price": "0.50", "block_size": "1000000"},
        ],
        allowances=[{"code": "minutes", "kinds": ["call.local", "call.mobile"], "quantity": "600"}],
    )


@pytest.fixture
def customers(tenant, plan):
    result = []
    for external_id in ("c1", "c2", "c3"):
        customer, _ = create_customer(tenant=tenant, external_id=external_id)
        subscribe(customer=customer, plan=plan, starts_on=date(2025, 1, 1))
        result.append(customer)
    return result


def at(day: int, minute: int = 0, month: int = 12) -> datetime:
    return datetime(2025, month, day, 10, 0, tzinfo=SAO_PAULO) + timedelta(minutes=minute)


def call(record_id: str, customer: str, seconds, when: datetime, destination: str = "33334444", kind: str = "call") -> dict:
    return {"id": record_id, "customer": customer, "kind": kind, "quantity": seconds,
            "occurred_at": when.isoformat(), "destination": destination}
