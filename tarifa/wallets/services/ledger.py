"""Every balance change goes through `post_entry` (or, for a fold's debits, `charging.post_debits`),
under the wallet's row lock, as one append-only ledger entry with an idempotency key."""

from __future__ import annotations

import re
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime
from decimal import ROUND_DOWN, Decimal

from django.db import IntegrityError, connection, transaction
from django.db.models import F
from django.utils import timezone

from tarifa.core.errors import Conflict, DomainError, NotFound
from tarifa.core.money import MONEY_LIMIT, MONEY_STEP, DecimalSum, check_decimal
from tarifa.core.pgarrays import array_literal
from tarifa.core.text import check_lengths
from tarifa.metering.selectors import current_plan
from tarifa.runtime.services import enqueue
from tarifa.alerts.models import Alert
from tarifa.tenants.models import Customer
from tarifa.wallets.models import AuditEntry, GrantDraw, GrantLot, LedgerEntry, Wallet

ZERO = Decimal(0)
Kind = LedgerEntry.Kind
UNIT = re.compile(r"^[A-Z][A-Z0-9_]{2,15}$")


@dataclass(frozen=True)
class Posted:
    entry: LedgerEntry
    created: bool  # False: the idempotency key had been used, `entry` is the stored one
    grants_given_back: dict[int, Decimal] = field(default_factory=dict)  # refunds: grant lot id -> amount


@dataclass
class GivenBack:
    """What refunds gave back to one wallet: to grant lots (lot id -> amount) and as paid credit.
    A re-rate's new debit takes it again the same way before any other credit, since re-rating
    corrects prices, not what paid them."""

    lots: dict[int, Decimal] = field(default_factory=dict)
    paid: Decimal = ZERO


def lock_wallet(*, customer: Customer) -> Wallet:
    wallet = Wallet.objects.select_for_update().filter(customer=customer).first()
    if wallet is None:
        raise NotFound("wallet", customer.external_id)
    return wallet


def configure_wallet(*, customer: Customer, unit: str | None = None, credit_limit: Decimal | None = None,
                     low_balance_threshold: Decimal | None = None, clear_threshold: bool = False,
                     actor: str = "") -> tuple[Wallet, bool]:
    """Create the customer's wallet or change its settings. The unit is fixed once money moved."""
    with transaction.atomic():
        wallet = Wallet.objects.select_for_update().filter(customer=customer).first()
        created = wallet is None
        if created:
            try:
                with transaction.atomic():
                    wallet = Wallet.objects.create(tenant_id=customer.tenant_id, customer=customer,
                                                   unit=_clean_unit(unit or _plan_currency(customer)))
            except IntegrityError:  # a concurrent request created it first: change that one
                wallet, created = Wallet.objects.select_for_update().get(customer=customer), False
        if not created and unit is not None and _clean_unit(unit) != wallet.unit:
            if wallet.entries.exists():
                raise Conflict("wallet_unit_fixed", f"This wallet already holds {wallet.unit}; its unit cannot change.",
                               field="unit")
            wallet.unit = _clean_unit(unit)
        before, line_before = _settings_of(wallet), wallet.low_balance_threshold
        if credit_limit is not None:
            check_decimal(credit_limit, field="credit_limit")
            if credit_limit < 0:
                raise DomainError("invalid_credit_limit", "credit_limit must be zero or positive.", field="credit_limit")
            wallet.credit_limit = credit_limit
        if clear_threshold:
            wallet.low_balance_threshold = None
        elif low_balance_threshold is not None:
            wallet.low_balance_threshold = check_decimal(low_balance_threshold, field="low_balance_threshold")
        alerts = []
        if not created and wallet.low_balance_threshold != line_before:
            alerts = _move_line(wallet=wallet)
        wallet.save()
        queue_balance_alerts(wallet=wallet, alerts=alerts)
        if not created and _settings_of(wallet) != before:
            audit = AuditEntry.objects.create(wallet=wallet, actor=actor or "api", action="configure", before=before,
                                              after=_settings_of(wallet), reason="settings changed")
            if wallet.credit_limit > Decimal(before["credit_limit"]):  # more room: what failed may fit now
                queue_failed_usage_retry(wallet=wallet, cause=f"limit:{audit.id}")
    return wallet, created


def top_up(*, customer: Customer, amount: Decimal, idempotency_key: str, caused_by: str,
           reason: str = "") -> Posted:
    """Credit a wallet once per idempotency key, then retry its usage that failed for lack of credit."""
    check_decimal(amount, field="amount")
    if amount <= 0:
        raise DomainError("invalid_amount", "A top-up amount must be positive.", field="amount")
    with transaction.atomic():
        wallet = lock_wallet(customer=customer)
        posted = post_entry(wallet=wallet, kind=Kind.TOP_UP, amount=amount, idempotency_key=f"top_up:{idempotency_key}",
                            caused_by=caused_by, reason=reason or "top-up")
        if posted.created:
            queue_failed_usage_retry(wallet=wallet, cause=f"entry:{posted.entry.id}")
    return posted


def adjust_balance(*, customer: Customer, amount: Decimal, reason: str, actor: str,
                   idempotency_key: str | None = None) -> Posted:
    """An operator's correction (CLI or admin), written to the audit log with before and after."""
    if not (reason or "").strip():
        raise DomainError("reason_required", "An adjustment needs a reason.", field="reason")
    if not (actor or "").strip():
        raise DomainError("actor_required", "An adjustment needs the operator's name.", field="actor")
    check_decimal(amount, field="amount")
    if amount == 0:
        raise DomainError("invalid_amount", "An adjustment amount must not be zero.", field="amount")
    with transaction.atomic():
        wallet = lock_wallet(customer=customer)
        before = {"balance": str(wallet.balance)}
        key = f"adjustment:{idempotency_key or timezone.now().isoformat()}"
        posted = post_entry(wallet=wallet, kind=Kind.ADJUSTMENT, amount=amount, idempotency_key=key,
                            caused_by=f"operator:{actor}", reason=reason)
        if posted.created:
            AuditEntry.objects.create(wallet=wallet, entry=posted.entry, actor=actor, action="adjustment",
                                      before=before, after={"balance": str(wallet.balance)}, reason=reason)
            if amount > 0:
                queue_failed_usage_retry(wallet=wallet, cause=f"entry:{posted.entry.id}")
    return posted


def post_entry(*, wallet: Wallet, kind: str, amount: Decimal, idempotency_key: str, caused_by: str,
               reason: str = "", expires_at: datetime | None = None, record_count: int = 0,
               reverses: LedgerEntry | None = None) -> Posted:
    """Append one entry to a wallet the caller holds locked (select_for_update) and move its balance.

    A used idempotency key returns the stored entry untouched, or raises if it moved a different amount.
    """
    existing = LedgerEntry.objects.filter(wallet=wallet, idempotency_key=idempotency_key).first()
    if existing is not None:
        if existing.amount != amount or existing.kind != kind:
            raise Conflict("idempotency_conflict",
                           f"Idempotency key '{idempotency_key}' was already used for {existing.kind} {existing.amount}.",
                           field="idempotency_key")
        return Posted(existing, False)
    check_lengths(LedgerEntry, {"reason": reason, "idempotency_key": idempotency_key})  # not cut short unseen
    if kind in (Kind.USAGE_DEBIT, Kind.ADJUSTMENT) and not covers(wallet=wallet, amount=-amount):
        raise DomainError("insufficient_credits",
                          f"The balance {wallet.balance} {wallet.unit} (credit limit {wallet.credit_limit}) "
                          f"does not cover {-amount}.", field="amount", status=409)
    granted_before = wallet.granted_remaining
    if abs(wallet.balance + amount) >= MONEY_LIMIT:
        raise DomainError("balance_out_of_range", f"A balance of {wallet.balance + amount} {wallet.unit} is beyond what "
                          "a wallet holds.", field="amount", status=409)
    alerts = move_balance(wallet=wallet, kind=kind, amount=amount)
    entry = LedgerEntry.objects.create(wallet=wallet, kind=kind, amount=amount, balance_after=wallet.balance,
                                       reason=reason, caused_by=caused_by[:200], idempotency_key=idempotency_key,
                                       expires_at=expires_at, record_count=record_count, reverses=reverses)
    given_back = {}
    if kind == Kind.GRANT:
        GrantLot.objects.create(wallet=wallet, entry=entry, remaining=wallet.granted_remaining - granted_before,
                                expires_at=expires_at)
    elif kind == Kind.REFUND and reverses is not None:
        given_back = give_back_grants(wallet=wallet, debit=reverses, amount=amount, refund=entry)
    elif amount < 0 and kind != Kind.GRANT_EXPIRY:
        spend_grants(wallets=[wallet], amounts={wallet.id: -amount}, entries={wallet.id: entry.id})
    save_wallets([wallet])
    queue_balance_alerts(wallet=wallet, alerts=alerts)
    return Posted(entry, True, given_back)


def covers(*, wallet: Wallet, amount: Decimal, spent: Decimal = ZERO) -> bool:
    """Whether the wallet can pay `amount` on top of `spent`: never below -credit_limit."""
    return amount <= 0 or wallet.balance - spent - amount >= -wallet.credit_limit


def save_wallets(wallets: list[Wallet]) -> None:
    """Write the balances of locked wallets: one UPDATE … FROM unnest() on PostgreSQL."""
    now = timezone.now()
    if connection.vendor != "postgresql":
        for wallet in wallets:
            wallet.updated_at = now
        Wallet.objects.bulk_update(wallets, ["balance", "granted_remaining", "alert_generation", "updated_at"])
        return
    with connection.cursor() as cursor:
        cursor.execute(
            f"""UPDATE {Wallet._meta.db_table} AS w SET balance = v.balance, granted_remaining = v.granted,
                    alert_generation = v.generation, updated_at = %s
                FROM unnest(%s::bigint[], %s::numeric[], %s::numeric[], %s::integer[]) AS v(id, balance, granted, generation)
                WHERE w.id = v.id""",
            [now, array_literal(w.id for w in wallets), array_literal(w.balance for w in wallets),
             array_literal(w.granted_remaining for w in wallets), array_literal(w.alert_generation for w in wallets)],
        )


def move_balance(*, wallet: Wallet, kind: str, amount: Decimal) -> list[str]:
    """Move the in-memory balance and say which balance alerts this crossing raises.

    Low balance: from above the threshold to at or below it; depleted: from above zero to zero or
    below. A rise above the threshold (above zero without one) re-arms both for the next crossing.
    """
    before = wallet.balance
    after = wallet.balance = before + amount
    if kind == Kind.GRANT:  # a grant first settles what the credit limit lent; the rest is granted credit
        wallet.granted_remaining += amount - min(amount, max(ZERO, -before))
    line = wallet.low_balance_threshold
    raised = []
    if line is not None and before > line >= after:
        raised.append(Alert.Type.WALLET_LOW_BALANCE)
    if before > 0 >= after:
        raised.append(Alert.Type.WALLET_DEPLETED)
    rearm_at = line if line is not None else ZERO
    if before <= rearm_at < after:
        wallet.alert_generation += 1
    return raised


def _move_line(*, wallet: Wallet) -> list[str]:
    """The low-balance line moved: a balance above it re-arms the alerts (a new generation, so the
    next fall through the new line is a crossing of its own); one at or below it is low now, and
    alerted unless this generation's low-balance alert was raised already."""
    line = wallet.low_balance_threshold
    if wallet.balance > (line if line is not None else ZERO):
        wallet.alert_generation += 1
        return []
    return [Alert.Type.WALLET_LOW_BALANCE] if line is not None else []


def spend_grants(*, wallets: list[Wallet], amounts: dict[int, Decimal], entries: dict[int, int],
                 given_back: dict[int, GivenBack] | None = None) -> None:
    """Granted credit is spent first, the earliest-expiring grant first (grants that never expire
    last; wallets are locked), each take recorded against the wallet's entry in `entries`. What
    refunds of a re-rate gave back (`given_back`) is taken again first, the same way."""
    holders = {w.id: w for w in wallets if w.granted_remaining > 0 and amounts.get(w.id, ZERO) > 0}
    if not holders:
        return
    lots = defaultdict(list)
    for lot in (GrantLot.objects.filter(wallet_id__in=list(holders), remaining__gt=0)
                .order_by(F("expires_at").asc(nulls_last=True), "id")):
        lots[lot.wallet_id].append(lot)
    draws: list[GrantDraw] = []

    def draw(lot: GrantLot, wanted: Decimal) -> Decimal:
        take = min(lot.remaining, wanted)
        if take > 0:
            lot.remaining -= take
            holders[lot.wallet_id].granted_remaining -= take
            draws.append(GrantDraw(lot=lot, entry_id=entries[lot.wallet_id], amount=take))
        return max(take, ZERO)

    for wallet_id in holders:
        left = amounts[wallet_id]
        back = (given_back or {}).get(wallet_id)
        if back is not None:  # the grants given back first, earliest-expiring first, as spent
            for lot in lots[wallet_id]:
                if lot.id in back.lots:
                    left -= draw(lot, min(back.lots[lot.id], left))
            left = max(ZERO, left - back.paid)  # paid credit pays again what it had paid
        for lot in lots[wallet_id]:
            if left <= 0:
                break
            left -= draw(lot, left)
    GrantLot.objects.bulk_update({d.lot for d in draws}, ["remaining"])
    GrantDraw.objects.bulk_create(draws)


def give_back_grants(*, wallet: Wallet, debit: LedgerEntry, amount: Decimal, refund: LedgerEntry) -> dict[int, Decimal]:
    """A refund of `debit` (its balance moved already) gives back to grants the share of it that
    grants paid of the debit (all that is left of it with the debit's last refund), to the grant it
    took from last first: that credit is granted again, and still expires. As with a grant, what
    settles credit the limit lent is not granted. Returns lot id -> amount given back."""
    net = dict(GrantDraw.objects.filter(entry=debit).values_list("lot_id").annotate(net=DecimalSum("amount"))
               .filter(net__gt=0))
    if not net:
        return {}
    drawn = GrantDraw.objects.filter(entry=debit, amount__gt=0).aggregate(s=DecimalSum("amount"))["s"]
    refunded = debit.refunds.exclude(pk=refund.pk).aggregate(s=DecimalSum("amount"))["s"] or ZERO
    if amount >= -debit.amount - refunded:
        share = sum(net.values(), ZERO)
    else:
        share = (amount * drawn / -debit.amount).quantize(MONEY_STEP, rounding=ROUND_DOWN)
    left = min(share, max(ZERO, wallet.balance) - wallet.granted_remaining)
    given, draws = {}, []
    for lot in (GrantLot.objects.filter(pk__in=list(net))
                .order_by(F("expires_at").desc(nulls_first=True), "-id")):
        take = min(net[lot.id], left)
        if take <= 0:
            break
        lot.remaining += take
        wallet.granted_remaining += take
        left -= take
        given[lot.id] = take
        draws.append(GrantDraw(lot=lot, entry=debit, amount=-take, refund=refund))
        lot.save(update_fields=["remaining"])
    GrantDraw.objects.bulk_create(draws)
    return given


def queue_balance_alerts(*, wallet: Wallet, alerts: list[str]) -> None:
    """The alerts are raised by their own job (never in the billing path); the unique key names the
    crossing, so a crossing seen twice (retried fold) queues one job."""
    for alert_type in alerts:
        enqueue("wallets.raise_balance_alert", unique_key=f"wallet-alert:{wallet.id}:{alert_type}:{wallet.alert_generation}",
                payload={"wallet_id": wallet.id, "type": alert_type, "generation": wallet.alert_generation,
                         "balance": str(wallet.balance)})


def queue_failed_usage_retry(*, wallet: Wallet, cause: str) -> None:
    """Retry the wallet's failed usage after credit arrived or its limit grew, once per such change:
    `cause` names it (`entry:<ledger entry id>`, `limit:<audit id>`)."""
    enqueue("wallets.retry_failed_usage", unique_key=f"wallet-retry:{cause}",
            payload={"customer_id": wallet.customer_id})


def _clean_unit(unit: str) -> str:
    unit = (unit or "").strip().upper()
    if not UNIT.match(unit):
        raise DomainError("invalid_unit", "A wallet unit is an ISO 4217 code (BRL) or a named credit unit "
                          "(3-16 letters, digits or _).", field="unit")
    return unit


def _plan_currency(customer: Customer) -> str:
    plan = current_plan(customer=customer)
    return plan.currency if plan else customer.tenant.default_currency


def _settings_of(wallet: Wallet) -> dict:
    return {"unit": wallet.unit, "credit_limit": str(wallet.credit_limit),
            "low_balance_threshold": None if wallet.low_balance_threshold is None else str(wallet.low_balance_threshold)}


def refund_debits(*, charges: dict[int, Decimal], key: str, reason: str) -> dict[int, GivenBack]:
    """Give back what usage_debits paid (re-rating re-charges the records afterwards): one refund per
    debit, reversing it. The caller's transaction holds the records and summaries. Returns, by
    wallet id, where the credit went back (for spend_grants)."""
    given: dict[int, GivenBack] = {}
    for debit in LedgerEntry.objects.filter(id__in=list(charges)).order_by("wallet_id", "id"):
        wallet = Wallet.objects.select_for_update().get(pk=debit.wallet_id)
        posted = post_entry(wallet=wallet, kind=Kind.REFUND, amount=charges[debit.id],
                            idempotency_key=f"{key}:{debit.id}", caused_by="system:rerate", reason=reason,
                            reverses=debit)
        back = given.setdefault(wallet.id, GivenBack())
        for lot_id, amount in posted.grants_given_back.items():
            back.lots[lot_id] = back.lots.get(lot_id, ZERO) + amount
        back.paid += charges[debit.id] - sum(posted.grants_given_back.values(), ZERO)
    return given
