"""Prepaid wallets: a balance that changes only through an append-only ledger."""

from __future__ import annotations

from decimal import Decimal

from django.db import models
from django.db.models import Q

from tarifa.core.money import MONEY
from tarifa.tenants.models import Customer, Tenant


class Wallet(models.Model):
    """A customer's prepaid credit. `balance` always equals the sum of its ledger entries
    (`tarifa billing reconcile` proves it); it may go down to -credit_limit, never below."""

    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="+")
    customer = models.OneToOneField(Customer, on_delete=models.CASCADE, related_name="wallet")
    unit = models.CharField(max_length=16, help_text="ISO 4217 currency or a named credit unit; must match the plan's.")
    balance = models.DecimalField(**MONEY, default=Decimal(0))
    credit_limit = models.DecimalField(**MONEY, default=Decimal(0), help_text="How far below zero usage may go.")
    low_balance_threshold = models.DecimalField(**MONEY, null=True, blank=True)
    granted_remaining = models.DecimalField(**MONEY, default=Decimal(0),
                                            help_text="Granted credit not yet spent (spent before paid credit).")
    alert_generation = models.PositiveIntegerField(
        default=0, help_text="Bumped when the balance rises above the threshold: re-arms the balance alerts.")
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    def __str__(self) -> str:
        return f"{self.customer.external_id}: {self.balance} {self.unit}"


class LedgerEntry(models.Model):
    class Kind(models.TextChoices):
        TOP_UP = "top_up"
        GRANT = "grant"
        USAGE_DEBIT = "usage_debit"
        REFUND = "refund"
        ADJUSTMENT = "adjustment"
        GRANT_EXPIRY = "grant_expiry"  # unused granted credit removed when its grant expires

    wallet = models.ForeignKey(Wallet, on_delete=models.PROTECT, related_name="entries")
    kind = models.CharField(max_length=16, choices=Kind.choices)
    amount = models.DecimalField(**MONEY, help_text="Signed: credits are positive, debits negative.")
    balance_after = models.DecimalField(**MONEY)
    reason = models.CharField(max_length=200, blank=True, default="")
    caused_by = models.CharField(max_length=200, help_text="api-key:<prefix>, operator:<name>, worker:<id>, system:<job>")
    idempotency_key = models.CharField(max_length=200)
    record_count = models.PositiveIntegerField(default=0, help_text="Usage records a usage_debit paid for.")
    expires_at = models.DateTimeField(null=True, blank=True, help_text="Grants: when unused credit is removed.")
    reverses = models.ForeignKey("self", on_delete=models.PROTECT, null=True, blank=True, related_name="refunds",
                                 help_text="Refunds: the usage_debit they give back (reversal or re-rating).")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["wallet", "idempotency_key"], name="ledger_idempotent"),
        ]
        indexes = [models.Index(fields=["wallet", "-id"], name="ledger_wallet_idx")]

    def __str__(self) -> str:
        return f"{self.kind} {self.amount}"


class GrantLot(models.Model):
    """What is left of one grant: spent before paid credit (earliest expiry first), and whatever
    remains at expiry is removed by a grant_expiry entry."""

    wallet = models.ForeignKey(Wallet, on_delete=models.CASCADE, related_name="grant_lots")
    entry = models.OneToOneField(LedgerEntry, on_delete=models.PROTECT, related_name="lot")
    remaining = models.DecimalField(**MONEY)
    expires_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        indexes = [models.Index(fields=["expires_at"], name="grant_lot_expiry_idx", condition=Q(remaining__gt=0))]


class GrantDraw(models.Model):
    """What one ledger entry (a usage debit, a negative adjustment) took from one grant, or, with
    `refund` set and a negative amount, what a refund of that entry gave back to it: a refund
    returns granted credit to the grant it came from, where it still expires."""

    lot = models.ForeignKey(GrantLot, on_delete=models.CASCADE, related_name="draws", db_index=False)
    entry = models.ForeignKey(LedgerEntry, on_delete=models.PROTECT, related_name="grant_draws")
    amount = models.DecimalField(**MONEY)
    refund = models.ForeignKey(LedgerEntry, on_delete=models.PROTECT, null=True, blank=True, related_name="+",
                               db_index=False)


class AuditEntry(models.Model):
    """Who changed a wallet by hand, when, from what to what, and why."""

    wallet = models.ForeignKey(Wallet, on_delete=models.PROTECT, related_name="audit")
    entry = models.OneToOneField(LedgerEntry, on_delete=models.PROTECT, related_name="audit", null=True, blank=True)
    actor = models.CharField(max_length=200)
    action = models.CharField(max_length=32)
    before = models.JSONField()
    after = models.JSONField()
    reason = models.CharField(max_length=500)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        verbose_name_plural = "audit entries"
