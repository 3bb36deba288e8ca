"""Per-tenant gateway credentials and check settings."""

from __future__ import annotations

from django.db import transaction
from django.utils import timezone

from tarifa.core.errors import DomainError
from tarifa.core.network import check_public_url
from tarifa.payments.models import GatewayCredential, PaymentCheck, PaymentSettings
from tarifa.payments.services.invoices import check_gateway
from tarifa.payments.services.schedule import parse_intervals
from tarifa.tenants.models import Tenant

SETTINGS_FIELDS = ("progression", "first_interval_seconds", "max_interval_seconds", "intervals", "expire_after_days",
                   "invoice_due_days", "default_gateway", "failure_alert_after", "late_usage_months",
                   "close_grace_days", "settle_every_days")


def set_credential(*, tenant: Tenant, gateway: str, base_url: str, email: str, token: str,
                   requests_per_minute: int = 300, timeout_seconds: float = 10.0) -> GatewayCredential:
    """Store (or replace) a gateway credential; checks paused by a refused credential resume now."""
    check_gateway(gateway)
    if not base_url.startswith(("https://", "http://")):
        raise DomainError("invalid_base_url", "base_url must be an http(s) URL.", field="base_url")
    check_public_url(base_url, field="base_url")
    if requests_per_minute < 1 or not 0 < timeout_seconds <= 120:
        raise DomainError("invalid_limits", "requests_per_minute >= 1 and 0 < timeout_seconds <= 120.")
    with transaction.atomic():
        credential, _ = GatewayCredential.objects.update_or_create(
            tenant=tenant, gateway=gateway, defaults=dict(
                base_url=base_url, email=email, token=token, requests_per_minute=requests_per_minute,
                timeout_seconds=timeout_seconds, status=GatewayCredential.Status.ACTIVE, consecutive_failures=0,
                last_error=""))
        PaymentCheck.objects.filter(tenant=tenant, invoice__gateway=gateway, status=PaymentCheck.Status.PAUSED).update(
            status=PaymentCheck.Status.PENDING, next_check_at=timezone.now(), last_error="")
    return credential


SETTINGS_RANGES = {
    "first_interval_seconds": (1, 30 * 86400), "max_interval_seconds": (1, 30 * 86400),
    "expire_after_days": (1, 3650), "invoice_due_days": (0, 3650), "failure_alert_after": (1, 1000),
    "late_usage_months": (0, 24),
    "close_grace_days": (0, 27),  # less than the shortest month: each month is closed within the next
    "settle_every_days": (0, 31),
}


def update_settings(*, tenant: Tenant, **fields) -> PaymentSettings:
    config, _ = PaymentSettings.objects.get_or_create(tenant=tenant)
    for key, value in fields.items():
        if key in SETTINGS_FIELDS and value is not None:
            setattr(config, key, value)
    check_settings(config)
    config.save()
    return config


def check_settings(config: PaymentSettings) -> None:
    """DomainError unless the settings make sense together (the API and the admin store only such)."""
    check_gateway(config.default_gateway, field="default_gateway")  # the close's invoices are checked there
    if config.progression not in PaymentSettings.Progression.values:
        raise DomainError("invalid_progression", "progression is 'exponential' or 'list'.", field="progression")
    if config.progression == PaymentSettings.Progression.LIST and not parse_intervals(config.intervals):
        raise DomainError("invalid_intervals", "A list progression needs intervals like 30m,1h,2h.", field="intervals")
    # Days and seconds become dates: 10^18 days had been a server error (no such date).
    for name, (low, high) in SETTINGS_RANGES.items():
        if not low <= getattr(config, name) <= high:
            raise DomainError(f"invalid_{name}", f"{name} is {low} to {high}.", field=name)
    if config.max_interval_seconds < config.first_interval_seconds:
        raise DomainError("invalid_intervals", "max_interval_seconds must be at least first_interval_seconds.",
                          field="max_interval_seconds")
