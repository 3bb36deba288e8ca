"""Asking the gateway whether open invoices were paid, and applying the answer exactly once.

Polling (`run_due_checks`), the webhook (`resolve_notification`) and `tarifa payments check` all
end in `apply_transactions`, which locks the invoice row: whichever arrives first pays it, the
other finds it paid. Gateway calls of a claimed batch run concurrently in threads (they wait on
the network); database writes stay on the calling thread.
"""

from __future__ import annotations

import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal

from django.conf import settings
from django.db import connection, transaction
from django.db.models import F
from django.utils import timezone

from tarifa.alerts.models import Alert
from tarifa.alerts.services import raise_alert
from tarifa.core.errors import NotFound
from tarifa.core.money import payable
from tarifa.core.pgarrays import array_literal
from tarifa.events.services import emit_event
from tarifa.payments.gateways import (
    GatewayError, GatewayTransaction, GatewayUnauthorized, gateway_for,
)
from tarifa.payments.models import (
    CheckLog, GatewayCredential, InboundNotification, Invoice, PaymentCheck, PaymentTransaction,
)
from tarifa.payments.services.invoices import invoice_payload
from tarifa.payments.selectors import settings_for
from tarifa.payments.services.schedule import interval_after
from tarifa.runtime.services import enqueue
from tarifa.tenants.models import Tenant

Status = PaymentCheck.Status
RETRY_SOON = 60  # seconds before a check that failed transiently is tried again (doubling per failure)


@dataclass
class Claimed:
    invoice_id: int
    tenant_id: int
    reference: str
    gateway: str
    attempts: int
    consecutive_failures: int
    expires_at: datetime


@dataclass
class Outcome:
    claimed: Claimed
    transactions: list[GatewayTransaction] = field(default_factory=list)
    error: GatewayError | None = None
    duration_ms: int = 0


@dataclass(frozen=True)
class CheckRun:
    checked: int = 0
    paid: int = 0
    failed: int = 0
    expired: int = 0


def claim_due_checks(*, worker_id: str, limit: int, lease_seconds: float, now: datetime | None = None) -> list[Claimed]:
    """Lease up to `limit` due checks: FOR UPDATE SKIP LOCKED by the partial index on next_check_at."""
    now = now or timezone.now()
    with transaction.atomic():
        due = (PaymentCheck.objects.select_for_update(skip_locked=True, of=("self",))
               .filter(status__in=[Status.PENDING, Status.PROCESSING], next_check_at__lte=now)
               .order_by("next_check_at")
               .values_list("invoice_id", "tenant_id", "invoice__reference", "invoice__gateway", "attempts",
                            "consecutive_failures", "expires_at")[:limit])
        claimed = [Claimed(*row) for row in due]
        if claimed:
            PaymentCheck.objects.filter(invoice_id__in=[c.invoice_id for c in claimed]).update(
                status=Status.PROCESSING, leased_by=worker_id, next_check_at=now + timedelta(seconds=lease_seconds))
    return claimed


def due_check_ids(*, limit: int = 100, now: datetime | None = None) -> list[int]:
    """The due query alone (for `payments stats` and the benchmark)."""
    return list(PaymentCheck.objects.filter(status__in=[Status.PENDING, Status.PROCESSING],
                                            next_check_at__lte=now or timezone.now())
                .order_by("next_check_at").values_list("invoice_id", flat=True)[:limit])


def run_due_checks(*, worker_id: str, limit: int | None = None, now: datetime | None = None) -> CheckRun:
    claimed = claim_due_checks(worker_id=worker_id, limit=limit or settings.TARIFA_PAYMENT_CHECK_BATCH,
                               lease_seconds=settings.TARIFA_PAYMENT_CHECK_LEASE_SECONDS, now=now)
    return check(claimed=claimed, worker_id=worker_id, source="poll", now=now)


def check_now(*, tenant: Tenant, reference: str, worker_id: str = "manual") -> CheckRun:
    """`tarifa payments check --reference R`: check one open invoice at once, whatever its schedule."""
    with transaction.atomic():
        row = (PaymentCheck.objects.select_for_update().filter(invoice__tenant=tenant, invoice__reference=reference)
               .values_list("invoice_id", "tenant_id", "invoice__reference", "invoice__gateway", "attempts",
                            "consecutive_failures", "expires_at", "status").first())
        if row is None:
            raise NotFound("invoice", reference)
        # An expired invoice too: it may have been paid late (a check past expiry expires it again).
        if row[-1] not in (Status.PENDING, Status.PROCESSING, Status.PAUSED, Status.EXPIRED):
            return CheckRun()
        PaymentCheck.objects.filter(invoice_id=row[0]).update(status=Status.PROCESSING, leased_by=worker_id)
    return check(claimed=[Claimed(*row[:-1])], worker_id=worker_id, source="manual")


def check(*, claimed: list[Claimed], worker_id: str, source: str, now: datetime | None = None) -> CheckRun:
    if not claimed:
        return CheckRun()
    credentials = _credentials_for(claimed)
    outcomes = _ask_gateways(claimed, credentials)
    return _apply_outcomes(outcomes, credentials=credentials, worker_id=worker_id, source=source,
                           now=now or timezone.now())


def _ask(item: Claimed, credentials: dict) -> Outcome:
    """One gateway lookup (runs in a pool thread: no database access here)."""
    credential = credentials.get((item.tenant_id, item.gateway))
    started = time.perf_counter()
    outcome = Outcome(item)
    if credential is None:
        outcome.error = GatewayUnauthorized("no_credential", f"No {item.gateway} credential for this tenant.")
    elif credential.status == GatewayCredential.Status.UNAUTHORIZED:
        outcome.error = GatewayUnauthorized("unauthorized", "The credential was refused before; fix it to resume.")
    else:
        try:
            outcome.transactions = [t for t in gateway_for(credential).transactions_by_reference(item.reference)
                                    if t.reference in ("", item.reference)]
        except GatewayError as exc:
            outcome.error = exc
    outcome.duration_ms = int((time.perf_counter() - started) * 1000)
    return outcome


def _credentials_for(claimed: list[Claimed]) -> dict:
    return {(c.tenant_id, c.gateway): c for c in
            GatewayCredential.objects.filter(tenant_id__in={c.tenant_id for c in claimed}).select_related("tenant")}


def _ask_gateways(claimed: list[Claimed], credentials: dict) -> list[Outcome]:
    if len(claimed) == 1:
        return [_ask(claimed[0], credentials)]
    with ThreadPoolExecutor(max_workers=min(len(claimed), settings.TARIFA_PAYMENT_CHECK_CONCURRENCY)) as pool:
        return list(pool.map(lambda item: _ask(item, credentials), claimed))


def run_checks_pipelined(*, worker_id: str, max_batches: int) -> CheckRun:
    """Claim and check batch after batch, the next batch's gateway calls in flight while the
    previous batch's answers are written, so neither the network nor the database waits."""
    totals = [0, 0, 0, 0]
    in_flight: deque = deque()
    batch = settings.TARIFA_PAYMENT_CHECK_BATCH
    with ThreadPoolExecutor(max_workers=settings.TARIFA_PAYMENT_CHECK_CONCURRENCY) as pool:
        for claims in range(max_batches + 1):
            claimed = [] if claims == max_batches else claim_due_checks(
                worker_id=worker_id, limit=batch, lease_seconds=settings.TARIFA_PAYMENT_CHECK_LEASE_SECONDS)
            if claimed:
                credentials = _credentials_for(claimed)
                in_flight.append((credentials, [pool.submit(_ask, item, credentials) for item in claimed]))
            while in_flight and (len(in_flight) > 1 or not claimed):
                credentials, futures = in_flight.popleft()
                run = _apply_outcomes([f.result() for f in futures], credentials=credentials, worker_id=worker_id,
                                      source="poll", now=timezone.now())
                totals = [a + b for a, b in zip(totals, (run.checked, run.paid, run.failed, run.expired))]
            if not claimed:
                break
    return CheckRun(*totals)


def _apply_outcomes(outcomes: list[Outcome], *, credentials: dict, worker_id: str, source: str,
                    now: datetime) -> CheckRun:
    paid = failed = expired = 0
    quiet: list[Outcome] = []  # answered, nothing paid: rescheduled in bulk
    refused: dict[tuple[int, str], list[Outcome]] = {}  # paused once per credential, however many it refused
    for outcome in outcomes:
        if isinstance(outcome.error, GatewayUnauthorized):
            refused.setdefault((outcome.claimed.tenant_id, outcome.claimed.gateway), []).append(outcome)
            failed += 1
        elif outcome.error is not None:
            _record_failure(outcome, credentials=credentials, worker_id=worker_id, source=source, now=now)
            failed += 1
        elif outcome.transactions:
            result = apply_transactions(invoice_id=outcome.claimed.invoice_id, transactions=outcome.transactions,
                                        source=source, duration_ms=outcome.duration_ms, now=now)
            if result == "paid":
                paid += 1
            else:
                quiet.append(outcome)
        else:
            quiet.append(outcome)
    for refusals in refused.values():
        _pause_credential(refusals, credentials=credentials, source=source, now=now)
    expired = _reschedule(quiet, worker_id=worker_id, source=source, now=now)
    _reset_credential_failures(outcomes, credentials)
    return CheckRun(checked=len(outcomes), paid=paid, failed=failed, expired=expired)


def apply_transactions(*, invoice_id: int, transactions: list[GatewayTransaction], source: str,
                       duration_ms: int = 0, now: datetime | None = None) -> str:
    """Apply what the gateway said about an invoice, exactly once whoever calls (poll or webhook).

    Returns "paid" (this call paid it), "reversed" (a paid transaction was refunded or charged back:
    `payment.reversed`, the invoice stays paid), "unexpected" (money for a cancelled invoice) or
    "unpaid".

    Money is never ignored: an expired invoice paid later (a boleto paid after its checks stopped,
    told by the webhook or a manual check) becomes paid; a cancelled one stays cancelled, and its
    payment raises `payment.unexpected` (event and alert) for someone to refund or re-bill.
    """
    now = now or timezone.now()
    with transaction.atomic():
        invoice = Invoice.objects.select_for_update().select_related("customer").get(pk=invoice_id)
        fresh = []
        for tx in transactions:
            _row, created = PaymentTransaction.objects.get_or_create(
                invoice=invoice, code=tx.code, status=tx.status,
                defaults={"gross_amount": tx.gross_amount, "fee_amount": tx.fee_amount, "net_amount": tx.net_amount,
                          "payment_method": tx.payment_method, "source": source, "seen_at": now})
            if created:
                fresh.append(tx)
        statuses = ",".join(str(t.status) for t in transactions)
        paying = next((t for t in transactions if t.is_paid), None)
        if invoice.status in (Invoice.Status.OPEN, Invoice.Status.EXPIRED) and paying is not None:
            paid_after_expiry = invoice.status == Invoice.Status.EXPIRED
            invoice.status, invoice.paid_at, invoice.paid_via = Invoice.Status.PAID, now, source
            invoice.gross_amount, invoice.fee_amount, invoice.net_amount = (
                paying.gross_amount, paying.fee_amount, paying.net_amount)
            invoice.payment_method, invoice.transaction_code = paying.payment_method, paying.code
            invoice.save()
            difference = payable(paying.gross_amount - invoice.amount, invoice.currency)
            PaymentCheck.objects.filter(invoice=invoice).update(status=Status.PAID, last_checked_at=now, leased_by="",
                                                                attempts=F("attempts") + 1, last_error="",
                                                                consecutive_failures=0)
            CheckLog.objects.create(invoice=invoice, checked_at=now, source=source, outcome="paid", statuses=statuses,
                                    duration_ms=duration_ms)
            emit_event(tenant=invoice.tenant, type="invoice.paid", payload={
                **invoice_payload(invoice), "gross_amount": str(paying.gross_amount), "fee_amount": str(paying.fee_amount),
                "net_amount": str(paying.net_amount), "payment_method": paying.payment_method, "paid_via": source,
                "paid_after_expiry": paid_after_expiry, "difference": str(difference)})
            if difference:
                _report_amount_mismatch(invoice, paying, difference=difference)
            return "paid"
        unexpected = next((t for t in fresh if t.is_paid), None) if invoice.status == Invoice.Status.CANCELLED else None
        if unexpected is not None:
            _report_unexpected_payment(invoice, unexpected, source=source, statuses=statuses, now=now,
                                       duration_ms=duration_ms)
            return "unexpected"
        reversal = next((t for t in fresh if t.is_reversal and invoice.status == Invoice.Status.PAID
                         and t.code == invoice.transaction_code), None)
        if reversal is not None:
            invoice.reversed_at = now
            invoice.save(update_fields=["reversed_at", "updated_at"])
            CheckLog.objects.create(invoice=invoice, checked_at=now, source=source, outcome="reversed",
                                    statuses=statuses, duration_ms=duration_ms)
            emit_event(tenant=invoice.tenant, type="payment.reversed", payload={
                **invoice_payload(invoice), "gateway_status": reversal.status})
            # money taken back (refunded, charged back): someone decides whether to bill it again
            raise_alert(tenant=invoice.tenant, customer=invoice.customer, type=Alert.Type.PAYMENT_REVERSED,
                        key=f"payment.reversed:invoice:{invoice.id}:{reversal.code}:{reversal.status}",
                        message=(f"The payment of invoice {invoice.reference} ({reversal.code}) was taken back "
                                 f"(gateway status {reversal.status}): bill it again or write it off."),
                        data={"reference": invoice.reference, "gateway_transaction": reversal.code,
                              "gateway_status": reversal.status,
                              "gross_amount": str(payable(invoice.gross_amount or Decimal(0), invoice.currency))})
            return "reversed"
    return "unpaid"


def _report_amount_mismatch(invoice: Invoice, paying: GatewayTransaction, *, difference: Decimal) -> None:
    """Paid, but not the amount billed (a discount or an extra added at the gateway, a boleto paid
    with another value): the invoice is paid, since the gateway's transaction is final, and the
    difference (paid less billed) is an alert for someone to collect, refund or write off."""
    billed = payable(invoice.amount, invoice.currency)
    raise_alert(tenant=invoice.tenant, customer=invoice.customer, type=Alert.Type.PAYMENT_AMOUNT_MISMATCH,
                key=f"payment.amount_mismatch:invoice:{invoice.id}:{paying.code}",
                message=(f"Invoice {invoice.reference} billed {billed} {invoice.currency}; transaction "
                         f"{paying.code} paid {paying.gross_amount} ({abs(difference)} "
                         f"{'short' if difference < 0 else 'over'}): collect, refund or write off the difference."),
                data={"reference": invoice.reference, "amount": str(billed), "currency": invoice.currency,
                      "gross_amount": str(paying.gross_amount), "difference": str(difference),
                      "gateway_transaction": paying.code})


def _report_unexpected_payment(invoice: Invoice, paying: GatewayTransaction, *, source: str, statuses: str,
                               now: datetime, duration_ms: int) -> None:
    """A cancelled invoice was paid: once per paying transaction (whatever paid statuses it goes
    through, 3 then 4), an alert and an event."""
    CheckLog.objects.create(invoice=invoice, checked_at=now, source=source, outcome="unexpected", statuses=statuses,
                            duration_ms=duration_ms)
    details = {"gross_amount": str(paying.gross_amount), "payment_method": paying.payment_method,
               "gateway_transaction": paying.code, "gateway_status": paying.status, "seen_via": source}
    alert = raise_alert(tenant=invoice.tenant, customer=invoice.customer, type=Alert.Type.PAYMENT_UNEXPECTED,
                        key=f"payment.unexpected:invoice:{invoice.id}:{paying.code}",
                        message=f"Invoice {invoice.reference} was cancelled, yet the gateway says transaction "
                                f"{paying.code} paid {paying.gross_amount}: refund it or bill it again.",
                        data={"reference": invoice.reference, **details})
    if alert is not None:
        emit_event(tenant=invoice.tenant, type="payment.unexpected", payload={**invoice_payload(invoice), **details})


def _reschedule(outcomes: list[Outcome], *, worker_id: str, source: str, now: datetime) -> int:
    """Unpaid after a good answer: the next interval (or expiry when the invoice is too old)."""
    if not outcomes:
        return 0
    by_tenant = {}
    expired, updates, logs = [], [], []
    for outcome in outcomes:
        item = outcome.claimed
        config = by_tenant.get(item.tenant_id) or by_tenant.setdefault(
            item.tenant_id, settings_for(Tenant(id=item.tenant_id)))
        logs.append(CheckLog(invoice_id=item.invoice_id, checked_at=now, source=source,
                             outcome="unpaid" if outcome.transactions else "not_found",
                             statuses=",".join(str(t.status) for t in outcome.transactions),
                             duration_ms=outcome.duration_ms))
        if now >= item.expires_at:
            expired.append(item.invoice_id)
            continue
        interval = interval_after(config, item.attempts + 1)
        updates.append((item.invoice_id, min(now + timedelta(seconds=interval), item.expires_at), interval))
    with transaction.atomic():
        CheckLog.objects.bulk_create(logs)
        _bulk_reschedule(updates, worker_id=worker_id, now=now)
        if expired:
            _expire(expired, worker_id=worker_id, now=now)
    return len(expired)


def _bulk_reschedule(updates: list[tuple[int, datetime, int]], *, worker_id: str, now: datetime) -> None:
    if not updates:
        return
    mine = PaymentCheck.objects.filter(leased_by=worker_id, status=Status.PROCESSING)
    if connection.vendor != "postgresql":
        for invoice_id, next_at, interval in updates:
            mine.filter(invoice_id=invoice_id).update(
                status=Status.PENDING, attempts=F("attempts") + 1, last_checked_at=now, next_check_at=next_at,
                interval_seconds=interval, last_error="", consecutive_failures=0, leased_by="")
        return
    with connection.cursor() as cursor:  # only rows still leased by us: a webhook may have paid one meanwhile
        cursor.execute(
            f"""UPDATE {PaymentCheck._meta.db_table} AS c SET status = 'pending', attempts = c.attempts + 1,
                    last_checked_at = %s, next_check_at = v.next_at, interval_seconds = v.interval, last_error = '',
                    consecutive_failures = 0, leased_by = ''
                FROM unnest(%s::bigint[], %s::timestamptz[], %s::integer[]) AS v(id, next_at, interval)
                WHERE c.invoice_id = v.id AND c.leased_by = %s AND c.status = 'processing'""",
            [now, array_literal(u[0] for u in updates), array_literal(u[1].isoformat() for u in updates),
             array_literal(u[2] for u in updates), worker_id])


def _expire(invoice_ids: list[int], *, worker_id: str, now: datetime) -> None:
    """Expire the invoices (still open) of these checks, leased by us. The invoices are locked
    first, then their checks, as apply_transactions and cancel_invoice lock them: in the other
    order an expiry and a webhook paying the invoice deadlocked, and an invoice the webhook paid
    meanwhile was announced as expired."""
    invoices = list(Invoice.objects.select_for_update(of=("self",)).filter(id__in=invoice_ids)
                    .select_related("customer", "tenant").order_by("id"))
    rows = PaymentCheck.objects.filter(invoice_id__in=invoice_ids, leased_by=worker_id, status=Status.PROCESSING)
    ids = set(rows.values_list("invoice_id", flat=True))
    rows.update(status=Status.EXPIRED, last_checked_at=now, attempts=F("attempts") + 1, leased_by="")
    expiring = [i for i in invoices if i.id in ids and i.status == Invoice.Status.OPEN]
    for invoice in expiring:
        invoice.status = Invoice.Status.EXPIRED
        emit_event(tenant=invoice.tenant, type="invoice.expired", payload=invoice_payload(invoice))
    Invoice.objects.filter(id__in=[i.id for i in expiring]).update(status=Invoice.Status.EXPIRED, updated_at=now)


def _record_failure(outcome: Outcome, *, credentials: dict, worker_id: str, source: str, now: datetime) -> None:
    """Transient or unreadable answer: retry soon (doubling, never later than the planned interval),
    keep the interval progression as it was, and alert after N consecutive failures."""
    item, error = outcome.claimed, outcome.error
    config = settings_for(Tenant(id=item.tenant_id))
    own_budget = error.code == "rate_limited"  # our per-credential limit, not the gateway's fault
    failures = item.consecutive_failures + (0 if own_budget else 1)
    delay = 5 if own_budget else min(RETRY_SOON * 2 ** max(0, failures - 1), interval_after(config, item.attempts))
    message = f"{error.code}: {error.message}"[:500]
    with transaction.atomic():
        PaymentCheck.objects.filter(invoice_id=item.invoice_id, leased_by=worker_id, status=Status.PROCESSING).update(
            status=Status.PENDING, last_checked_at=now, next_check_at=min(now + timedelta(seconds=delay),
                                                                          max(item.expires_at, now)),
            last_error=message, consecutive_failures=failures, leased_by="")
        CheckLog.objects.create(invoice_id=item.invoice_id, checked_at=now, source=source, outcome="error",
                                error=message, duration_ms=outcome.duration_ms)
        if failures == config.failure_alert_after:
            invoice = Invoice.objects.select_related("customer", "tenant").get(pk=item.invoice_id)
            raise_alert(tenant=invoice.tenant, customer=invoice.customer, type=Alert.Type.PAYMENT_CHECK_FAILING,
                        key=f"payment_check.failing:invoice:{invoice.id}:{now.isoformat()}",
                        message=f"Checks of invoice {invoice.reference} failed {failures} times in a row: {message}",
                        data={"reference": invoice.reference, "failures": failures, "error": message})
        credential = credentials.get((item.tenant_id, item.gateway))
        if credential is not None and not own_budget:
            _count_credential_failure(credential, message=message, config=config, now=now)


def _count_credential_failure(credential: GatewayCredential, *, message: str, config, now: datetime) -> None:
    GatewayCredential.objects.filter(pk=credential.pk).update(consecutive_failures=F("consecutive_failures") + 1,
                                                              last_error=message)
    credential.refresh_from_db(fields=["consecutive_failures"])
    if credential.consecutive_failures == config.failure_alert_after:
        raise_alert(tenant=credential.tenant, customer=None, type=Alert.Type.PAYMENT_CHECK_FAILING,
                    key=f"payment_check.failing:credential:{credential.id}:{now.isoformat()}",
                    message=f"{credential.gateway} calls failed {credential.consecutive_failures} times in a row: "
                            f"{message}", data={"gateway": credential.gateway, "error": message})


def _reset_credential_failures(outcomes: list[Outcome], credentials: dict) -> None:
    good = {(o.claimed.tenant_id, o.claimed.gateway) for o in outcomes if o.error is None}
    ids = [credentials[k].id for k in good if k in credentials and credentials[k].consecutive_failures]
    if ids:
        GatewayCredential.objects.filter(id__in=ids).update(consecutive_failures=0, last_error="")


def _pause_credential(outcomes: list[Outcome], *, credentials: dict, source: str, now: datetime) -> None:
    """401 (or no credential) for these checks of one tenant and gateway: stop all of that tenant's
    checks on the gateway and alert once, unless the credential was replaced since they read it.

    The credential is locked first, as set_credential locks it before resuming checks: in the
    other order the two deadlocked, and a 401 to the old token paused the new one."""
    item = outcomes[0].claimed
    message = f"{outcomes[0].error.code}: {outcomes[0].error.message}"
    used = credentials.get((item.tenant_id, item.gateway))
    with transaction.atomic():
        credential = (GatewayCredential.objects.select_for_update()
                      .filter(tenant_id=item.tenant_id, gateway=item.gateway).first())
        CheckLog.objects.bulk_create([
            CheckLog(invoice_id=o.claimed.invoice_id, checked_at=now, source=source, outcome="error",
                     error=f"{o.error.code}: {o.error.message}"[:500], duration_ms=o.duration_ms) for o in outcomes])
        if credential is not None and credential.status == GatewayCredential.Status.ACTIVE and (
                used is None or credential.updated_at != used.updated_at):
            # Replaced meanwhile: these checks go again now, with the new credential.
            PaymentCheck.objects.filter(invoice_id__in=[o.claimed.invoice_id for o in outcomes],
                                        status=Status.PROCESSING).update(
                status=Status.PENDING, next_check_at=now, last_error=message[:500], leased_by="")
            return
        PaymentCheck.objects.filter(tenant_id=item.tenant_id, invoice__gateway=item.gateway,
                                    status__in=[Status.PENDING, Status.PROCESSING]).update(
            status=Status.PAUSED, last_error=message[:500], leased_by="")
        stamp = "none"
        if credential is not None:
            GatewayCredential.objects.filter(pk=credential.pk).update(status=GatewayCredential.Status.UNAUTHORIZED,
                                                                      last_error=message[:500])
            stamp = credential.updated_at.isoformat()
        raise_alert(tenant=Tenant.objects.get(pk=item.tenant_id), customer=None,
                    type=Alert.Type.PAYMENT_CREDENTIAL_UNAUTHORIZED,
                    key=f"payment_credential.unauthorized:{item.tenant_id}:{item.gateway}:{stamp}",
                    message=f"{item.gateway} refused this tenant's credential; payment checks are paused until it "
                            f"is replaced. ({message})", data={"gateway": item.gateway, "error": message})


def resolve_notification(*, notification_id: int) -> str:
    """A webhook's notification code, looked up through the gateway and applied like a poll."""
    note = InboundNotification.objects.get(pk=notification_id)
    if note.status != InboundNotification.Status.PENDING:
        return note.status
    credential = GatewayCredential.objects.filter(tenant_id=note.tenant_id, gateway=note.gateway).first()
    if credential is None:
        raise GatewayUnauthorized("no_credential", f"No {note.gateway} credential for this tenant.")
    tx = gateway_for(credential).transaction_by_notification(note.code)  # errors: the job retries with backoff
    invoice = Invoice.objects.filter(tenant_id=note.tenant_id, reference=tx.reference).first()
    if invoice is None:
        outcome = InboundNotification.Status.IGNORED
    else:
        apply_transactions(invoice_id=invoice.id, transactions=[tx], source="webhook")
        outcome = InboundNotification.Status.APPLIED
    InboundNotification.objects.filter(pk=note.pk).update(status=outcome, processed_at=timezone.now())
    return outcome


def receive_notification(*, tenant: Tenant, gateway: str, code: str, notification_type: str) -> InboundNotification:
    """Store a gateway notification once and queue its resolution."""
    with transaction.atomic():
        note, created = InboundNotification.objects.get_or_create(
            tenant=tenant, gateway=gateway, code=code, defaults={"notification_type": notification_type})
        if created:
            enqueue("payments.resolve_notification", payload={"notification_id": note.id},
                    unique_key=f"notification:{note.id}")
    return note
