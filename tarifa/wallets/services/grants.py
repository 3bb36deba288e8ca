"""Monthly credit grants and their expiry.

The grant sweep runs every 15 minutes (at :05, :20, :35, :50 UTC, which is 00:05 on the 1st in
every time zone in use) and grants each wallet its plan's credit for the tenant's current month
once: the ledger's idempotency key `grant:<YYYY-MM>` makes a second run, a restarted scheduler
or two schedulers racing grant nothing more. A missed tick is caught up by the next one.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from decimal import Decimal

from django.db import transaction
from django.utils import timezone

from tarifa.metering.selectors import plans_on
from tarifa.tenants.models import Tenant
from tarifa.wallets.models import GrantLot, LedgerEntry, Wallet
from tarifa.wallets.services.ledger import post_entry, queue_failed_usage_retry

GRANT_TIME = (0, 5)  # 00:05 local on the 1st


def grant_monthly_credits(*, now: datetime | None = None) -> int:
    """Grant every wallet whose plan grants credit its grant for the current month; returns how many."""
    now = now or timezone.now()
    granted = 0
    for tenant in Tenant.objects.all():
        local = now.astimezone(tenant.tzinfo)
        if local.day == 1 and (local.hour, local.minute) < GRANT_TIME:
            continue  # the month's grant is due at 00:05 on the 1st
        granted += _grant_tenant(tenant=tenant, period=local.strftime("%Y-%m"), today=local.date(), now=now)
    return granted


def _grant_tenant(*, tenant: Tenant, period: str, today, now: datetime) -> int:
    key = f"grant:{period}"
    wallets = Wallet.objects.filter(tenant=tenant).exclude(entries__idempotency_key=key)
    plans = plans_on(customer_ids=wallets.values("customer_id"), day=today)
    granted = 0
    for wallet_id, customer_id in wallets.values_list("id", "customer_id"):
        plan = plans.get(customer_id)
        if plan is None or not plan.monthly_grant:
            continue
        with transaction.atomic():
            wallet = Wallet.objects.select_for_update().get(pk=wallet_id)
            posted = post_entry(
                wallet=wallet, kind=LedgerEntry.Kind.GRANT, amount=plan.monthly_grant, idempotency_key=key,
                caused_by="system:monthly-grant", reason=f"monthly grant {period} (plan {plan.code})",
                expires_at=now + timedelta(days=plan.grant_expiry_days) if plan.grant_expiry_days else None)
            if posted.created:
                queue_failed_usage_retry(wallet=wallet, cause=f"entry:{posted.entry.id}")
                granted += 1
    return granted


def expire_grants(*, now: datetime | None = None, wallet_ids: list[int] | None = None, after: str = "") -> Decimal:
    """Remove what is left of expired grants, one grant_expiry entry each; returns the total removed.

    With `wallet_ids`, only theirs, right after `after` (a reversal, a re-rate) gave credit back to
    a grant: its key tells that expiry from the grant's first one."""
    now = now or timezone.now()
    removed = Decimal(0)
    due = GrantLot.objects.filter(remaining__gt=0, expires_at__lte=now)
    if wallet_ids is not None:
        due = due.filter(wallet_id__in=wallet_ids)
    for lot_id, wallet_id in due.order_by("wallet_id", "expires_at", "id").values_list("id", "wallet_id"):
        with transaction.atomic():
            wallet = Wallet.objects.select_for_update().get(pk=wallet_id)
            lot = GrantLot.objects.select_related("entry").get(pk=lot_id)
            if lot.remaining <= 0:
                continue  # spent or expired meanwhile
            left = lot.remaining
            wallet.granted_remaining -= left
            post_entry(wallet=wallet, kind=LedgerEntry.Kind.GRANT_EXPIRY, amount=-left,
                       idempotency_key=f"grant_expiry:{lot.entry_id}" + (f":{after}" if after else ""),
                       caused_by="system:grant-expiry",
                       reason=f"unused credit of {lot.entry.reason or 'grant'} expired")
            lot.remaining = Decimal(0)
            lot.save(update_fields=["remaining"])
            removed += left
    return removed
