"""Invoices, the control rows that schedule their payment checks, and what the gateways said."""

from __future__ import annotations

from django.db import models
from django.db.models import Q

from tarifa.core.money import MONEY
from tarifa.tenants.models import Customer, Tenant


class PaymentSettings(models.Model):
    """Per-tenant check schedule and invoicing defaults."""

    class Progression(models.TextChoices):
        EXPONENTIAL = "exponential"  # first, then doubling, capped
        LIST = "list"  # explicit intervals; the last one repeats

    tenant = models.OneToOneField(Tenant, on_delete=models.CASCADE, related_name="payment_settings")
    progression = models.CharField(max_length=16, choices=Progression.choices, default=Progression.EXPONENTIAL)
    first_interval_seconds = models.PositiveIntegerField(default=15 * 60)
    max_interval_seconds = models.PositiveIntegerField(default=24 * 3600)
    intervals = models.CharField(max_length=200, blank=True, default="", help_text="e.g. 30m,1h,2h,4h,8h,12h,24h")
    expire_after_days = models.PositiveIntegerField(default=30)
    invoice_due_days = models.PositiveIntegerField(default=10, help_text="Monthly-close invoices are due after this.")
    late_usage_months = models.PositiveIntegerField(
        default=3, help_text="Closed months the close keeps settling (usage that changed after its invoice); 0: none.")
    close_grace_days = models.PositiveIntegerField(
        default=0, help_text="Days after a month ends before the close invoices it, so that CDRs arriving late are "
                             "in its first invoice instead of adjustments; 0: on the 1st at 00:05.")
    settle_every_days = models.PositiveIntegerField(
        default=1, help_text="A month's invoice changed by late usage (or reversals) gets at most one adjustment "
                             "invoice or credit note per this many days (the tenant's days), so CDRs trickling in "
                             "are billed together; 0: at every close run.")
    default_gateway = models.CharField(max_length=32, default="pagseguro")
    failure_alert_after = models.PositiveIntegerField(default=5, help_text="Consecutive errors before an alert.")


class GatewayCredential(models.Model):
    """How one tenant reaches one gateway (sandbox or production), and whether it works."""

    class Status(models.TextChoices):
        ACTIVE = "active"
        UNAUTHORIZED = "unauthorized"  # the gateway answered 401: checks paused until the credential changes

    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="gateway_credentials")
    gateway = models.CharField(max_length=32, default="pagseguro")
    base_url = models.URLField(default="https://ws.sandbox.pagseguro.uol.com.br")
    email = models.CharField(max_length=254)
    token = models.CharField(max_length=200)
    requests_per_minute = models.PositiveIntegerField(default=300)
    timeout_seconds = models.FloatField(default=10.0)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.ACTIVE)
    consecutive_failures = models.PositiveIntegerField(default=0)
    last_error = models.CharField(max_length=500, blank=True, default="")
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["tenant", "gateway"], name="credential_per_gateway")]

    def __str__(self) -> str:
        return f"{self.tenant.slug}/{self.gateway}"


class Invoice(models.Model):
    class Status(models.TextChoices):
        OPEN = "open"
        PAID = "paid"
        CANCELLED = "cancelled"
        EXPIRED = "expired"

    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="+")
    customer = models.ForeignKey(Customer, on_delete=models.PROTECT, related_name="invoices")
    reference = models.CharField(max_length=200, help_text="Sent to the gateway; unique per tenant.")
    content_hash = models.CharField(max_length=64)
    amount = models.DecimalField(**MONEY)
    currency = models.CharField(max_length=16)
    due_date = models.DateField()
    gateway = models.CharField(max_length=32)
    payment_link = models.URLField(max_length=500, blank=True, default="")
    description = models.CharField(max_length=500, blank=True, default="")
    # The monthly close's first invoice of a summary, then one adjustment per close run that finds
    # usage folded into the summary after it was invoiced (late CDRs).
    summary = models.ForeignKey("metering.Summary", on_delete=models.PROTECT, null=True, blank=True,
                                related_name="invoices", help_text="Monthly close: the summary it bills.")
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.OPEN)
    paid_at = models.DateTimeField(null=True, blank=True)
    gross_amount = models.DecimalField(**MONEY, null=True, blank=True)
    fee_amount = models.DecimalField(**MONEY, null=True, blank=True)
    net_amount = models.DecimalField(**MONEY, null=True, blank=True)
    payment_method = models.CharField(max_length=32, blank=True, default="")
    transaction_code = models.CharField(max_length=64, blank=True, default="")
    paid_via = models.CharField(max_length=16, blank=True, default="", help_text="poll, webhook or manual")
    reversed_at = models.DateTimeField(null=True, blank=True, help_text="A paid transaction was refunded/charged back.")
    cancelled_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField()
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["tenant", "reference"], name="invoice_unique_reference")]
        indexes = [models.Index(fields=["tenant", "status", "id"], name="invoice_status_idx")]

    def __str__(self) -> str:
        return self.reference


class CreditNote(models.Model):
    """What the monthly close owes back: a summary whose usage fell (reversals, a re-rate) below what
    its invoices billed. The tenant's ERP refunds or offsets it; the close only records it, once."""

    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="+")
    customer = models.ForeignKey(Customer, on_delete=models.PROTECT, related_name="credit_notes")
    summary = models.ForeignKey("metering.Summary", on_delete=models.PROTECT, related_name="credit_notes")
    reference = models.CharField(max_length=200, help_text="TRF-2025-12-acct-C1, -C2…; unique per tenant.")
    amount = models.DecimalField(**MONEY, help_text="Positive: what is owed back.")
    currency = models.CharField(max_length=16)
    reason = models.CharField(max_length=500)
    created_at = models.DateTimeField()

    class Meta:
        constraints = [models.UniqueConstraint(fields=["tenant", "reference"], name="credit_note_unique_reference")]

    def __str__(self) -> str:
        return self.reference


class PaymentCheck(models.Model):
    """The control row of an open invoice: when to ask the gateway next, and how it went.

    Workers claim due rows (`next_check_at <= now` among pending and processing, by a partial
    index, so finding them costs what is due, not what is open); a claimed row is `processing`
    with `next_check_at` moved to the end of its lease, so a killed worker's checks come back.
    """

    class Status(models.TextChoices):
        PENDING = "pending"
        PROCESSING = "processing"
        PAID = "paid"
        CANCELLED = "cancelled"
        EXPIRED = "expired"
        PAUSED = "paused"  # its credential was refused (401); resumed when the credential is replaced

    invoice = models.OneToOneField(Invoice, on_delete=models.CASCADE, primary_key=True, related_name="payment_check")
    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="+", db_index=False)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.PENDING)
    attempts = models.PositiveIntegerField(default=0)
    last_checked_at = models.DateTimeField(null=True, blank=True)
    next_check_at = models.DateTimeField()
    interval_seconds = models.PositiveIntegerField(help_text="The interval that led to next_check_at.")
    expires_at = models.DateTimeField()
    last_error = models.CharField(max_length=500, blank=True, default="")
    consecutive_failures = models.PositiveIntegerField(default=0)
    leased_by = models.CharField(max_length=128, blank=True, default="")

    class Meta:
        indexes = [models.Index(fields=["next_check_at"], name="payment_check_due_idx",
                                condition=Q(status__in=["pending", "processing"]))]


class CheckLog(models.Model):
    """One look at the gateway for an invoice: what it answered, or what went wrong."""

    invoice = models.ForeignKey(Invoice, on_delete=models.CASCADE, related_name="check_log")
    checked_at = models.DateTimeField()
    source = models.CharField(max_length=16)  # poll, webhook, manual
    outcome = models.CharField(max_length=32)  # paid, unpaid, not_found, error, reversed, expired, unexpected
    statuses = models.CharField(max_length=100, blank=True, default="", help_text="Gateway status codes seen.")
    error = models.CharField(max_length=500, blank=True, default="")
    duration_ms = models.PositiveIntegerField(default=0)

    class Meta:
        indexes = [models.Index(fields=["invoice", "-checked_at"], name="check_log_invoice_idx")]


class PaymentTransaction(models.Model):
    """A gateway transaction as last seen for an invoice; the payment history is their status changes."""

    invoice = models.ForeignKey(Invoice, on_delete=models.CASCADE, related_name="transactions")
    code = models.CharField(max_length=64)
    status = models.PositiveSmallIntegerField()
    gross_amount = models.DecimalField(**MONEY, null=True, blank=True)
    fee_amount = models.DecimalField(**MONEY, null=True, blank=True)
    net_amount = models.DecimalField(**MONEY, null=True, blank=True)
    payment_method = models.CharField(max_length=32, blank=True, default="")
    source = models.CharField(max_length=16)
    seen_at = models.DateTimeField()

    class Meta:
        constraints = [models.UniqueConstraint(fields=["invoice", "code", "status"], name="transaction_status_once")]


class InboundNotification(models.Model):
    """A gateway webhook as received; resolved through the gateway API by a job."""

    class Status(models.TextChoices):
        PENDING = "pending"
        APPLIED = "applied"
        IGNORED = "ignored"  # resolved to no invoice of ours
        FAILED = "failed"

    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="+")
    gateway = models.CharField(max_length=32)
    code = models.CharField(max_length=100)
    notification_type = models.CharField(max_length=32)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.PENDING)
    received_at = models.DateTimeField(auto_now_add=True)
    processed_at = models.DateTimeField(null=True, blank=True)
    error = models.CharField(max_length=500, blank=True, default="")

    class Meta:
        constraints = [models.UniqueConstraint(fields=["tenant", "gateway", "code"], name="notification_once")]
