"""Wallet API under /api/v1/customers/{external_id}/wallet: read, configure, ledger, top-ups."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal

from django.http import HttpRequest
from ninja import Field, Router, Schema, Status

from tarifa.core.pagination import paginate
from tarifa.core.schemas import ErrorOut
from tarifa.tenants.selectors import customer_by_external_id
from tarifa.wallets import selectors
from tarifa.wallets.services import ledger

router = Router(tags=["wallets"])


class WalletOut(Schema):
    customer: str = Field(..., alias="customer.external_id")
    unit: str
    balance: Decimal
    credit_limit: Decimal
    available: Decimal
    low_balance_threshold: Decimal | None
    granted_remaining: Decimal
    updated_at: datetime

    @staticmethod
    def resolve_available(obj) -> Decimal:
        return obj.balance + obj.credit_limit


class WalletIn(Schema):
    unit: str | None = None
    credit_limit: Decimal | None = None
    low_balance_threshold: Decimal | None = None


class EntryOut(Schema):
    id: int
    kind: str
    amount: Decimal
    balance_after: Decimal
    reason: str
    caused_by: str
    idempotency_key: str
    expires_at: datetime | None
    created_at: datetime
    usage_ids: list[str] = []


class EntryPage(Schema):
    items: list[EntryOut]
    next_cursor: str | None


class TopUpIn(Schema):
    amount: Decimal
    idempotency_key: str = Field(..., min_length=1, max_length=150)
    reason: str = ""


@router.get("/{external_id}/wallet", response={200: WalletOut, 404: ErrorOut})
def get_wallet(request: HttpRequest, external_id: str):
    customer = customer_by_external_id(tenant=request.tenant, external_id=external_id)
    return selectors.wallet_of(customer=customer)


@router.put("/{external_id}/wallet", response={200: WalletOut, 201: WalletOut, 404: ErrorOut, 409: ErrorOut,
                                               422: ErrorOut})
def configure_wallet(request: HttpRequest, external_id: str, payload: WalletIn):
    customer = customer_by_external_id(tenant=request.tenant, external_id=external_id)
    fields = payload.dict(exclude_unset=True)
    wallet, created = ledger.configure_wallet(
        customer=customer, unit=fields.get("unit"), credit_limit=fields.get("credit_limit"),
        low_balance_threshold=fields.get("low_balance_threshold"),
        clear_threshold="low_balance_threshold" in fields and fields["low_balance_threshold"] is None,
        actor=f"api-key:{request.api_key.prefix}")
    return Status(201 if created else 200, selectors.wallet_of(customer=customer))


@router.get("/{external_id}/wallet/ledger", response={200: EntryPage, 404: ErrorOut, 422: ErrorOut})
def wallet_ledger(request: HttpRequest, external_id: str, kind: str | None = None, cursor: str | None = None,
                  limit: int = 50):
    customer = customer_by_external_id(tenant=request.tenant, external_id=external_id)
    page = paginate(selectors.ledger(wallet=selectors.wallet_of(customer=customer), kind=kind),
                    cursor=cursor, limit=limit)
    paid = selectors.records_paid_by(entry_ids=[e.id for e in page.items if e.kind == "usage_debit"])
    for entry in page.items:
        entry.usage_ids = paid.get(entry.id, [])
    return page


@router.post("/{external_id}/wallet/top-ups", response={200: EntryOut, 201: EntryOut, 404: ErrorOut, 409: ErrorOut,
                                                        422: ErrorOut})
def top_up(request: HttpRequest, external_id: str, payload: TopUpIn):
    """Credit the wallet once per `idempotency_key`; usage that failed for lack of credit is retried."""
    customer = customer_by_external_id(tenant=request.tenant, external_id=external_id)
    posted = ledger.top_up(customer=customer, amount=payload.amount, idempotency_key=payload.idempotency_key,
                           caused_by=f"api-key:{request.api_key.prefix}", reason=payload.reason)
    return Status(201 if posted.created else 200, posted.entry)
