from __future__ import annotations

from typing import NamedTuple

from django.db.models import Count, Min, Q, QuerySet
from django.utils import timezone

from tarifa.core.errors import NotFound
from tarifa.payments.models import CreditNote, GatewayCredential, Invoice, PaymentCheck
from tarifa.tenants.models import Tenant


def invoices(*, tenant: Tenant, status: str | None = None, customer=None) -> QuerySet[Invoice]:
    rows = Invoice.objects.filter(tenant=tenant).select_related("customer", "payment_check")
    if status:
        rows = rows.filter(status=status)
    if customer is not None:
        rows = rows.filter(customer=customer)
    return rows


def credit_notes(*, tenant: Tenant, customer=None) -> QuerySet[CreditNote]:
    rows = CreditNote.objects.filter(tenant=tenant).select_related("customer", "summary")
    return rows if customer is None else rows.filter(customer=customer)


def invoice_by_reference(*, tenant: Tenant, reference: str) -> Invoice:
    invoice = (invoices(tenant=tenant).prefetch_related("transactions").filter(reference=reference).first())
    if invoice is None:
        raise NotFound("invoice", reference)
    return invoice


def payment_stats(*, tenant: Tenant | None = None) -> dict:
    """Counts by invoice and check status, how many checks are due now, the next check times and
    the credentials that fail."""
    now = timezone.now()
    checks = PaymentCheck.objects.all()
    bills = Invoice.objects.all()
    credentials = GatewayCredential.objects.all()
    if tenant is not None:
        checks, bills, credentials = (checks.filter(tenant=tenant), bills.filter(tenant=tenant),
                                      credentials.filter(tenant=tenant))
    active = checks.filter(status__in=[PaymentCheck.Status.PENDING, PaymentCheck.Status.PROCESSING])
    return {
        "invoices": dict(bills.values_list("status").annotate(n=Count("id")).order_by()),
        "checks": dict(checks.values_list("status").annotate(n=Count("invoice_id")).order_by()),
        "due_now": active.filter(next_check_at__lte=now).count(),
        "next_checks": list(active.filter(next_check_at__gt=now).order_by("next_check_at")
                            .values_list("next_check_at", flat=True)[:5]),
        "oldest_due": active.filter(next_check_at__lte=now).aggregate(m=Min("next_check_at"))["m"],
        "failing_credentials": [
            {"gateway": c.gateway, "tenant": c.tenant.slug, "status": c.status,
             "consecutive_failures": c.consecutive_failures, "last_error": c.last_error}
            for c in credentials.select_related("tenant")
            if c.status != GatewayCredential.Status.ACTIVE or c.consecutive_failures]}


class PaymentBacklog(NamedTuple):
    active_checks: int  # open invoices whose payment is being checked
    due_checks: int
    oldest_due_seconds: float  # since the oldest due check was due (0: none)
    failing_credentials: int  # refused (401) or erring


def payment_backlog(*, now=None) -> PaymentBacklog:
    """Read at each /metrics scrape, through the due-check partial index: its cost follows the open
    invoices, not every invoice ever made."""
    now = now or timezone.now()
    active = PaymentCheck.objects.filter(status__in=[PaymentCheck.Status.PENDING, PaymentCheck.Status.PROCESSING])
    counts = active.aggregate(n=Count("invoice_id"), due=Count("invoice_id", filter=Q(next_check_at__lte=now)),
                              oldest=Min("next_check_at"))
    failing = GatewayCredential.objects.filter(~Q(status=GatewayCredential.Status.ACTIVE)
                                               | Q(consecutive_failures__gt=0)).count()
    oldest = counts["oldest"]
    return PaymentBacklog(active_checks=counts["n"], due_checks=counts["due"],
                          oldest_due_seconds=max(0.0, (now - oldest).total_seconds()) if oldest else 0.0,
                          failing_credentials=failing)
