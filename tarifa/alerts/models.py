from __future__ import annotations

from django.db import models

from tarifa.tenants.models import Customer, Tenant


class Alert(models.Model):
    """An alert raised once: `key` names the condition (customer, period, allowance, threshold…)."""

    class Type(models.TextChoices):
        ALLOWANCE_THRESHOLD = "allowance.threshold"  # a customer's allowance use reached a plan threshold
        WALLET_LOW_BALANCE = "wallet.low_balance"  # a prepaid balance fell to its low-balance line
        WALLET_DEPLETED = "wallet.depleted"  # a prepaid balance fell to zero or below
        PAYMENT_CHECK_FAILING = "payment_check.failing"  # a gateway kept failing an invoice's checks
        PAYMENT_CREDENTIAL_UNAUTHORIZED = "payment_credential.unauthorized"  # a gateway refused the tenant's token
        PAYMENT_UNEXPECTED = "payment.unexpected"  # a cancelled invoice was paid: refund or bill again
        PAYMENT_AMOUNT_MISMATCH = "payment.amount_mismatch"  # an invoice was paid more or less than it billed
        PAYMENT_REVERSED = "payment.reversed"  # a paid invoice's money was refunded or charged back

    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="alerts")
    customer = models.ForeignKey(Customer, on_delete=models.CASCADE, related_name="alerts", null=True, blank=True)
    type = models.CharField(max_length=64, choices=Type.choices)
    key = models.CharField(max_length=255)
    message = models.CharField(max_length=500)
    data = models.JSONField(default=dict)
    raised_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["tenant", "key"], name="alert_once_per_key")]
        indexes = [models.Index(fields=["tenant", "type", "raised_at"], name="alert_tenant_type_idx")]

    def __str__(self) -> str:
        return self.key
