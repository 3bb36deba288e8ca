from __future__ import annotations

from datetime import date, datetime, timedelta
from decimal import Decimal
from zoneinfo import ZoneInfo

import pytest

from tarifa.metering.services.folding import fold_all_pending
from tarifa.metering.services.ingestion import ingest_usage
from tarifa.metering.services.plans import create_plan, subscribe
from tarifa.tenants.services import create_customer
from tarifa.wallets.services.ledger import configure_wallet, top_up

SAO_PAULO = ZoneInfo("America/Sao_Paulo")


@pytest.fixture
def token_plan(tenant):
    """1.00 BRL per 1,000 input tokens (gpt-4o-mini: 0.10), 4.00 per 1,000 output tokens; 30 grant."""
    return create_plan(
        tenant=tenant, code="ai", name="AI assistant", currency="BRL", monthly_grant=Decimal("30"),
        grant_expiry_days=10,
        rates=[
            {"kind": "llm.input_tokens", "unit": "token", "price": "1.00", "block_size": "1000"},
            {"kind": "llm.input_tokens", "destination_prefix": "gpt-4o-mini", "unit": "token", "price": "0.10",
             "block_size": "1000"},
            {"kind": "llm.output_tokens", "unit": "token", "price": "4.00", "block_size": "1000"},
        ],
    )


def prepaid_customer(tenant, plan, external_id: str, *, balance: str = "0", credit_limit: str = "0",
                     threshold: str | None = None):
    customer, _ = create_customer(tenant=tenant, external_id=external_id, billing_mode="prepaid")
    subscribe(customer=customer, plan=plan, starts_on=date(2025, 1, 1))
    configure_wallet(customer=customer, unit="BRL", credit_limit=Decimal(credit_limit),
                     low_balance_threshold=Decimal(threshold) if threshold else None)
    if Decimal(balance):
        top_up(customer=customer, amount=Decimal(balance), idempotency_key=f"initial-{external_id}", caused_by="test")
    return customer


@pytest.fixture
def wallet_customer(tenant, token_plan):
    return prepaid_customer(tenant, token_plan, "org-1", balance="10", threshold="3")


def at(day: int, minute: int = 0, month: int = 12) -> datetime:
    return datetime(2025, month, day, 10, 0, tzinfo=SAO_PAULO) + timedelta(minutes=minute)


def tokens(record_id: str, customer: str, count: int, when: datetime | None = None, *, kind="llm.input_tokens",
           model: str = "") -> dict:
    record = {"id": record_id, "customer": customer, "kind": kind, "quantity": count,
              "occurred_at": (when or at(1)).isoformat()}
    if model:
        record["attributes"] = {"model": model}
    return record


def use(tenant, records: list[dict], *, fold: bool = True):
    result = ingest_usage(tenant=tenant, records=records)
    assert result.counts["accepted"] + result.counts["duplicate"] == len(records), result.results
    if fold:
        return fold_all_pending(batch_size=1000)
    return None
