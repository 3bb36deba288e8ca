"""Background entry points of wallets: balance alerts, retries after a top-up, monthly grants."""

from __future__ import annotations

from django.conf import settings

from tarifa.metering.services.processing import retry_failed_usage
from tarifa.runtime.registry import job, periodic
from tarifa.wallets.services.alerts import raise_balance_alert as raise_balance_alert_service
from tarifa.wallets.services.grants import expire_grants, grant_monthly_credits


@job("wallets.raise_balance_alert", queue="default", max_attempts=10)
def raise_balance_alert(ctx, *, wallet_id: int, type: str, generation: int, balance: str) -> None:
    raise_balance_alert_service(wallet_id=wallet_id, type=type, generation=generation, balance=balance)


@job("wallets.retry_failed_usage", queue="default", max_attempts=10)
def retry_failed(ctx, *, customer_id: int) -> None:
    retry_failed_usage(customer_id=customer_id)


@job("wallets.grants", queue="default", max_attempts=5)
def grants(ctx, scheduled_for: str | None = None) -> None:
    grant_monthly_credits()
    expire_grants()


periodic("wallets.grants", cron=settings.TARIFA_GRANT_CRON, job_type="wallets.grants")
