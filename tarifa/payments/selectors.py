from __future__ import annotations

from datetime import date, datetime, time, timedelta
from decimal import Decimal
from typing import NamedTuple

from django.db.models import (
    Case, Count, DecimalField, Exists, ExpressionWrapper, F, Min, OuterRef, Q, QuerySet, Subquery, Sum, Value, When,
)
from django.db.models.functions import Coalesce, Round
from django.utils import timezone

from tarifa.core.errors import NotFound
from tarifa.core.money import CURRENCIES, MINOR_UNITS, MONEY, payable
from tarifa.metering.models import Summary
from tarifa.metering.periods import months_before
from tarifa.metering.selectors import waiting_usage
from tarifa.payments.models import CreditNote, GatewayCredential, Invoice, PaymentCheck, PaymentSettings
from tarifa.tenants.models import Customer, Tenant


def settings_for(tenant: Tenant) -> PaymentSettings:
    """The tenant's payment settings, or the defaults for one that set none."""
    found = PaymentSettings.objects.filter(tenant=tenant).first()
    return found or PaymentSettings(tenant=tenant)


def invoices(*, tenant: Tenant, status: str | None = None, customer=None,
             period: str | None = None) -> QuerySet[Invoice]:
    rows = Invoice.objects.filter(tenant=tenant).select_related("customer", "payment_check", "summary")
    if status:
        rows = rows.filter(status=status)
    if customer is not None:
        rows = rows.filter(customer=customer)
    if period:
        rows = rows.filter(summary__period=period)
    return rows


def credit_notes(*, tenant: Tenant, customer=None, period: str | None = None) -> QuerySet[CreditNote]:
    rows = CreditNote.objects.filter(tenant=tenant).select_related("customer", "summary")
    if customer is not None:
        rows = rows.filter(customer=customer)
    return rows.filter(summary__period=period) if period else rows


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
    active = checks.filter(_CHECKING)
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
            for c in credentials.filter(_FAILING).select_related("tenant")]}


# Checks of open invoices (the due-check partial index's condition), and credentials that fail:
# refused (401) or erring.
_CHECKING = Q(status__in=[PaymentCheck.Status.PENDING, PaymentCheck.Status.PROCESSING])
_FAILING = ~Q(status=GatewayCredential.Status.ACTIVE) | Q(consecutive_failures__gt=0)


class PaymentBacklog(NamedTuple):
    active_checks: int  # open invoices whose payment is being checked
    due_checks: int
    oldest_due_seconds: float  # since the oldest due check was due (0: none)
    failing_credentials: int  # refused (401) or erring


def payment_backlog(*, now=None) -> PaymentBacklog:
    """Read at each /metrics scrape, through the due-check partial index: its cost follows the open
    invoices, not every invoice ever made."""
    now = now or timezone.now()
    counts = PaymentCheck.objects.filter(_CHECKING).aggregate(
        n=Count("invoice_id"), due=Count("invoice_id", filter=Q(next_check_at__lte=now)), oldest=Min("next_check_at"))
    failing = GatewayCredential.objects.filter(_FAILING).count()
    oldest = counts["oldest"]
    return PaymentBacklog(active_checks=counts["n"], due_checks=counts["due"],
                          oldest_due_seconds=max(0.0, (now - oldest).total_seconds()) if oldest else 0.0,
                          failing_credentials=failing)


def closed_months(today: date, config: PaymentSettings) -> tuple[str, str]:
    """The last closed month, and the first of the closed months the close still answers for (the
    last `late_usage_months`, and at least the last closed): what it invoices and settles. A month
    is closed `close_grace_days` after it ends (the 1st with none)."""
    closing = closing_day(today, config)
    previous = months_before(closing, 1)
    return previous, min(months_before(closing, config.late_usage_months), previous)


def closing_day(today: date, config: PaymentSettings) -> date:
    """The day whose month before is the last closed month: `close_grace_days` before today."""
    return today - timedelta(days=config.close_grace_days)


def closable_summaries(*, tenant: Tenant) -> QuerySet[Summary]:
    """A tenant's summaries with no usage waiting for a fold (it is in flight: the close leaves the
    summary to a later run, and reconcile to a later check). Whatever the customer's billing mode
    now: what the close invoices of one is what no wallet paid (invoiceable_amount). Usage counted
    in a credit unit of a plan's own (not an ISO 4217 currency) is not money, and not invoiced."""
    return (Summary.objects.filter(tenant=tenant, currency__in=CURRENCIES)
            .exclude(Exists(waiting_usage(OuterRef("pk")))))


def has_invoice():
    """For filtering summaries: whether an invoice bills it."""
    return Exists(Invoice.objects.filter(summary_id=OuterRef("pk")))


def never_invoiced(summaries: QuerySet[Summary], *, previous: str, window: str) -> QuerySet[Summary]:
    """The summaries the close owes a first invoice: something to invoice (`invoiceable`), no
    invoice yet, of the month just ended or of an earlier month it still answers for."""
    return (with_invoiceable(summaries).filter(~has_invoice(), invoiceable__gt=0, period__gte=window,
                                               period__lte=previous))


def settled_since(cutoff: datetime):
    """For filtering summaries: whether an invoice or a credit note of it was made at or after `cutoff`."""
    return (Exists(Invoice.objects.filter(summary_id=OuterRef("pk"), created_at__gte=cutoff))
            | Exists(CreditNote.objects.filter(summary_id=OuterRef("pk"), created_at__gte=cutoff)))


def settling_cutoff(local_now: datetime, config: PaymentSettings) -> datetime | None:
    """Since when a summary's invoice or credit note holds back its next one (settle_every_days):
    the start of the tenant's day `settle_every_days - 1` days ago, so late usage is settled at most
    once in that many of its days; None with 0 (every close run settles)."""
    if not config.settle_every_days:
        return None
    day = local_now.date() - timedelta(days=config.settle_every_days - 1)
    return datetime.combine(day, time(), tzinfo=local_now.tzinfo)


def unsettled(summaries: QuerySet[Summary]) -> QuerySet[Summary]:
    """The invoiced summaries whose invoiceable amount their invoices and credit notes no longer
    match (annotated as with_invoiced_amounts): what the close settles."""
    return with_invoiced_amounts(summaries.filter(has_invoice())).filter(_UNSETTLED)


def with_invoiceable(summaries: QuerySet[Summary]) -> QuerySet[Summary]:
    """Summaries annotated with `invoiceable` (invoiceable_amount, for choosing them): their total
    less what prepaid wallets paid of it, rounded to their currency's minor unit."""
    unpaid = ExpressionWrapper(F("total_amount") - F("wallet_paid_amount"), output_field=DecimalField(**MONEY))
    return summaries.annotate(invoiceable=Case(
        *(When(currency__in=codes, then=Round(unpaid, places))
          for places, codes in _CURRENCIES_BY_PLACES if places != 2),
        default=Round(unpaid, 2), output_field=DecimalField(**MONEY)))


# The currencies of each number of minor units (payable's rounding), for rounding in SQL.
_CURRENCIES_BY_PLACES = sorted((places, sorted(code for code, its in MINOR_UNITS.items() if its == places))
                               for places in set(MINOR_UNITS.values()))


def invoiceable_amount(summary: Summary) -> Decimal:
    """What of a summary is the close's to invoice: what no prepaid wallet paid, rounded half up to
    its currency's minor unit (payable). A customer who changes billing mode mid-month has a
    summary holding both; invoicing it whole had charged the wallet's part twice, and invoicing
    postpaid customers only had never invoiced the postpaid part of a customer turned prepaid.
    Its invoices (less credit notes) always come to this rounded amount, so rounding never drifts
    by more than half a minor unit, however often late usage adjusts it."""
    return payable(summary.total_amount - summary.wallet_paid_amount, summary.currency)


def with_invoiced_amounts(summaries: QuerySet[Summary]) -> QuerySet[Summary]:
    """Summaries annotated with `invoiceable` and what their invoices and credit notes hold:
    `billed` (every invoice, cancelled ones too), `owed` (invoices not cancelled) and `credited`.
    Settled, what a summary has to invoice is no more than billed - credited and no less than
    owed - credited."""
    return with_invoiceable(summaries).annotate(
        billed=_summed(Invoice.objects), credited=_summed(CreditNote.objects),
        owed=_summed(Invoice.objects.exclude(status=Invoice.Status.CANCELLED)))


def _exact(amount):
    """`amount` rounded to the money columns' places. SQLite sums and subtracts decimals as binary
    floating point (27.00 + 3.60 + 0.60 + 0.60 is 31.800000000000004 there), so a settled summary
    had compared unequal to its invoices there for ever; rounded, they compare as the amounts do.
    (PostgreSQL's numeric is exact: nothing changes there.)"""
    return Round(amount, MONEY["decimal_places"], output_field=DecimalField(**MONEY))


_UNSETTLED = (Q(invoiceable__gt=_exact(F("billed") - F("credited")))
              | Q(invoiceable__lt=_exact(F("owed") - F("credited"))))


def _summed(invoices_or_credit_notes):
    """The sum of a summary's invoices (or credit notes), 0 for none: a correlated subquery."""
    total = (invoices_or_credit_notes.filter(summary_id=OuterRef("pk")).order_by().values("summary_id")
             .annotate(total=Sum("amount")).values("total"))
    return Coalesce(Subquery(total), Value(Decimal(0)), output_field=DecimalField(**MONEY))


class BillingGap(NamedTuple):
    customer: str
    period: str
    total: Decimal  # what the summary holds that no wallet paid
    invoiced: Decimal  # its invoices less its credit notes
    problem: str
    settles_itself: bool  # a later close run settles it


def billing_gaps(*, tenant: Tenant | None = None, customer: Customer | None = None, period: str | None = None,
                 now: datetime | None = None) -> list[BillingGap]:
    """Summaries of closed months whose invoiceable amount (what no prepaid wallet paid) their
    invoices and credit notes do not match. Those of the months the close still answers for
    (closed_months) are listed as what a later run settles; one changed after its invoice before
    them, nobody will. (One never invoiced before them is history from before Tarifa billed it, or
    usage imported for reports: not listed.) Usage still waiting for a fold is left out: it is in
    flight."""
    now = now or timezone.now()
    gaps = []
    for owner in [tenant] if tenant else Tenant.objects.order_by("slug"):
        previous, window = closed_months(now.astimezone(owner.tzinfo).date(), settings_for(owner))
        rows = closable_summaries(tenant=owner).filter(period__lte=previous)
        if customer is not None:
            rows = rows.filter(customer=customer)
        if period:
            rows = rows.filter(period=period)
        missed = never_invoiced(rows, previous=previous, window=window)
        changed = unsettled(rows)
        for summary in missed.select_related("customer").order_by("period", "customer__external_id"):
            gaps.append(BillingGap(summary.customer.external_id, summary.period, summary.invoiceable, Decimal(0),
                                   "not invoiced yet: the next close run invoices it", True))
        for summary in changed.select_related("customer").order_by("period", "customer__external_id"):
            in_window = summary.period >= window
            gaps.append(BillingGap(
                summary.customer.external_id, summary.period, summary.invoiceable, summary.billed - summary.credited,
                "changed after its invoice: a close run settles it (at most once in settle_every_days)"
                if in_window
                else "changed after its invoice, before late_usage_months: settle it by hand", in_window))
    return gaps
