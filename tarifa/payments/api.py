"""Invoices and payment checks: /api/v1/invoices, /api/v1/payments/…"""

from __future__ import annotations

from datetime import date, datetime
from decimal import Decimal

from django.http import HttpRequest
from ninja import Field, Router, Schema, Status

from tarifa.core.pagination import paginate
from tarifa.core.schemas import ErrorOut
from tarifa.metering.periods import checked_period
from tarifa.payments import selectors
from tarifa.payments.models import Invoice
from tarifa.payments.services import checking, credentials, invoices
from tarifa.tenants.selectors import customer_by_external_id

router = Router(tags=["payments"])


class InvoiceIn(Schema):
    reference: str = Field(..., min_length=1, max_length=200)
    customer: str
    amount: Decimal
    currency: str | None = None
    due_date: date
    gateway: str = "pagseguro"
    payment_link: str = ""
    description: str = ""


class CheckOut(Schema):
    status: str
    attempts: int
    last_checked_at: datetime | None
    next_check_at: datetime
    interval_seconds: int
    expires_at: datetime
    last_error: str
    consecutive_failures: int


class CheckLogOut(Schema):
    checked_at: datetime
    source: str
    outcome: str
    statuses: str
    error: str
    duration_ms: int


class TransactionOut(Schema):
    code: str
    status: int
    gross_amount: Decimal | None
    fee_amount: Decimal | None
    net_amount: Decimal | None
    payment_method: str
    source: str
    seen_at: datetime


class InvoiceOut(Schema):
    reference: str
    customer: str = Field(..., alias="customer.external_id")
    amount: Decimal
    currency: str
    due_date: date
    gateway: str
    payment_link: str
    description: str
    status: str
    paid_at: datetime | None
    gross_amount: Decimal | None
    fee_amount: Decimal | None
    net_amount: Decimal | None
    payment_method: str
    transaction_code: str
    paid_via: str
    reversed_at: datetime | None
    created_at: datetime
    period: str | None = Field(None, description="The month a monthly-close invoice bills (None for others).")
    check: CheckOut | None = Field(None, alias="payment_check")

    @staticmethod
    def resolve_period(obj) -> str | None:
        return obj.summary.period if obj.summary_id else None


class InvoiceDetailOut(InvoiceOut):
    checks: list[CheckLogOut]
    transactions: list[TransactionOut]

    @staticmethod
    def resolve_checks(obj) -> list:
        return list(obj.check_log.order_by("-checked_at")[:100])

    @staticmethod
    def resolve_transactions(obj) -> list:
        return list(obj.transactions.all())


class InvoicePage(Schema):
    items: list[InvoiceOut]
    next_cursor: str | None


class CancelIn(Schema):
    reason: str = ""


@router.post("/invoices", response={200: InvoiceDetailOut, 201: InvoiceDetailOut, 404: ErrorOut, 409: ErrorOut,
                                    422: ErrorOut})
def create_invoice(request: HttpRequest, payload: InvoiceIn):
    customer = customer_by_external_id(tenant=request.tenant, external_id=payload.customer)
    invoice, created = invoices.create_invoice(
        tenant=request.tenant, customer=customer, **payload.dict(exclude={"customer"}))
    return Status(201 if created else 200, selectors.invoice_by_reference(tenant=request.tenant,
                                                                          reference=invoice.reference))


@router.get("/invoices", response={200: InvoicePage, 404: ErrorOut, 422: ErrorOut})
def list_invoices(request: HttpRequest, status: Invoice.Status | None = None, customer: str | None = None,
                  period: str | None = None, cursor: str | None = None, limit: int = 50):
    owner = customer_by_external_id(tenant=request.tenant, external_id=customer) if customer else None
    rows = selectors.invoices(tenant=request.tenant, status=status, customer=owner, period=checked_period(period))
    return paginate(rows, cursor=cursor, limit=limit)


@router.get("/invoices/{reference}", response={200: InvoiceDetailOut, 404: ErrorOut})
def get_invoice(request: HttpRequest, reference: str):
    return selectors.invoice_by_reference(tenant=request.tenant, reference=reference)


@router.post("/invoices/{reference}/cancel", response={200: InvoiceDetailOut, 404: ErrorOut, 409: ErrorOut})
def cancel_invoice(request: HttpRequest, reference: str, payload: CancelIn):
    invoices.cancel_invoice(tenant=request.tenant, reference=reference, reason=payload.reason)
    return selectors.invoice_by_reference(tenant=request.tenant, reference=reference)


class CreditNoteOut(Schema):
    reference: str
    customer: str = Field(..., alias="customer.external_id")
    period: str = Field(..., alias="summary.period")
    amount: Decimal
    currency: str
    reason: str
    created_at: datetime


class CreditNotePage(Schema):
    items: list[CreditNoteOut]
    next_cursor: str | None


@router.get("/credit-notes", response={200: CreditNotePage, 404: ErrorOut, 422: ErrorOut})
def list_credit_notes(request: HttpRequest, customer: str | None = None, period: str | None = None,
                      cursor: str | None = None, limit: int = 50):
    owner = customer_by_external_id(tenant=request.tenant, external_id=customer) if customer else None
    rows = selectors.credit_notes(tenant=request.tenant, customer=owner, period=checked_period(period))
    return paginate(rows, cursor=cursor, limit=limit)


class CredentialIn(Schema):
    base_url: str = "https://ws.sandbox.pagseguro.uol.com.br"
    email: str
    token: str
    requests_per_minute: int = 300
    timeout_seconds: float = 10.0


class CredentialOut(Schema):
    gateway: str
    base_url: str
    email: str
    requests_per_minute: int
    timeout_seconds: float
    status: str


@router.put("/payments/gateways/{gateway}", response={200: CredentialOut, 422: ErrorOut})
def set_credential(request: HttpRequest, gateway: str, payload: CredentialIn):
    """Store the tenant's gateway credential (the token is never returned); paused checks resume."""
    return credentials.set_credential(tenant=request.tenant, gateway=gateway, **payload.dict())


class SettingsIn(Schema):
    progression: str | None = None
    first_interval_seconds: int | None = None
    max_interval_seconds: int | None = None
    intervals: str | None = None
    expire_after_days: int | None = None
    invoice_due_days: int | None = None
    default_gateway: str | None = None
    failure_alert_after: int | None = None
    late_usage_months: int | None = None
    close_grace_days: int | None = None
    settle_every_days: int | None = None


class SettingsOut(Schema):
    progression: str
    first_interval_seconds: int
    max_interval_seconds: int
    intervals: str
    expire_after_days: int
    invoice_due_days: int
    default_gateway: str
    failure_alert_after: int
    late_usage_months: int
    close_grace_days: int
    settle_every_days: int


@router.put("/payments/settings", response={200: SettingsOut, 422: ErrorOut})
def update_settings(request: HttpRequest, payload: SettingsIn):
    return credentials.update_settings(tenant=request.tenant, **payload.dict(exclude_unset=True))


class StatsOut(Schema):
    invoices: dict[str, int]
    checks: dict[str, int]
    due_now: int
    oldest_due: datetime | None
    next_checks: list[datetime]
    failing_credentials: list[dict]


@router.get("/payments/stats", response=StatsOut)
def payment_stats(request: HttpRequest):
    return selectors.payment_stats(tenant=request.tenant)


class CheckRunOut(Schema):
    checked: int
    paid: int
    failed: int
    expired: int


@router.post("/invoices/{reference}/check", response={200: CheckRunOut, 404: ErrorOut})
def check_invoice(request: HttpRequest, reference: str):
    """Ask the gateway about this invoice now (its schedule continues from this check)."""
    return checking.check_now(tenant=request.tenant, reference=reference, worker_id=f"api:{request.api_key.prefix}")
