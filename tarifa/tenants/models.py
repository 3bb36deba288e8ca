from __future__ import annotations

import zoneinfo

from django.db import models


class Tenant(models.Model):
    """One billing organisation; every other row belongs to exactly one tenant."""

    slug = models.SlugField(max_length=64, unique=True)
    name = models.CharField(max_length=200)
    timezone = models.CharField(max_length=64, default="America/Sao_Paulo")
    default_phone_region = models.CharField(max_length=2, default="BR")
    default_currency = models.CharField(max_length=3, default="BRL")
    created_at = models.DateTimeField(auto_now_add=True)

    def __str__(self) -> str:
        return self.slug

    @property
    def tzinfo(self) -> zoneinfo.ZoneInfo:
        return zoneinfo.ZoneInfo(self.timezone)


class ApiKey(models.Model):
    """An API credential. Only a SHA-256 of the secret is kept; the prefix is shown for identification."""

    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="api_keys")
    name = models.CharField(max_length=100, default="default")
    prefix = models.CharField(max_length=32, unique=True)
    key_hash = models.CharField(max_length=64)
    created_at = models.DateTimeField(auto_now_add=True)
    last_used_at = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)

    def __str__(self) -> str:
        return f"{self.prefix}… ({self.tenant.slug})"

    @property
    def is_active(self) -> bool:
        return self.revoked_at is None


class Customer(models.Model):
    class BillingMode(models.TextChoices):
        POSTPAID = "postpaid"  # usage folds into the monthly summary, invoiced later
        PREPAID = "prepaid"  # usage is also debited from the wallet in the fold's transaction

    # No index of its own: customer_unique_external_id (tenant, external_id) serves tenant lookups,
    # and with a second index on tenant alone, stale statistics made the planner probe a customer
    # by scanning the tenant's customers (bulk ingestion's per-record lookup).
    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="customers", db_index=False)
    external_id = models.CharField(max_length=128)
    name = models.CharField(max_length=200, blank=True, default="")
    email = models.EmailField(max_length=254, blank=True, default="")
    phone = models.CharField(max_length=20, blank=True, default="", help_text="E.164")
    metadata = models.JSONField(default=dict, blank=True)
    billing_mode = models.CharField(max_length=8, choices=BillingMode.choices, default=BillingMode.POSTPAID)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["tenant", "external_id"], name="customer_unique_external_id"),
        ]

    def __str__(self) -> str:
        return f"{self.external_id} ({self.tenant.slug})"
