from __future__ import annotations

import getpass
from decimal import Decimal, InvalidOperation

from tarifa.core.commands import TarifaCommand
from tarifa.core.errors import DomainError
from tarifa.tenants.selectors import customer_by_external_id, tenant_by_slug
from tarifa.wallets import selectors
from tarifa.wallets.services import ledger


def _amount(raw: str) -> Decimal:
    try:
        return Decimal(raw)
    except InvalidOperation:
        raise DomainError("invalid_amount", f"'{raw}' is not a decimal amount.", field="amount")


class Command(TarifaCommand):
    help = "Prepaid wallets: show, configure, ledger, top-up, and operator adjustments (audited)."

    def add_arguments(self, parser):
        sub = parser.add_subparsers(dest="action", required=True)
        for name, text in (("show", "Balance and settings."), ("ledger", "The last ledger entries."),
                           ("configure", "Create the wallet or change its settings."),
                           ("top-up", "Credit the wallet (idempotent on --key)."),
                           ("adjust", "Operator correction, written to the audit log.")):
            action = sub.add_parser(name, help=text)
            action.add_argument("--tenant", required=True)
            action.add_argument("--customer", required=True)
            if name == "ledger":
                action.add_argument("--limit", type=int, default=20)
            if name == "configure":
                action.add_argument("--unit")
                action.add_argument("--credit-limit")
                action.add_argument("--low-balance-threshold")
            if name in ("top-up", "adjust"):
                action.add_argument("--amount", required=True, help="Adjustments may be negative.")
                action.add_argument("--reason", required=name == "adjust", default="")
                action.add_argument("--key", required=name == "top-up", help="Idempotency key.")
            if name in ("configure", "adjust", "top-up"):
                action.add_argument("--operator", default=getpass.getuser(), help="Who does it (default: OS user).")

    def handle(self, *args, action, tenant, customer, **options):
        who = customer_by_external_id(tenant=tenant_by_slug(slug=tenant), external_id=customer)
        getattr(self, "_" + action.replace("-", "_"))(customer=who, **options)

    def _show(self, *, customer, **_):
        w = selectors.wallet_of(customer=customer)
        self.table(["customer", "unit", "balance", "credit limit", "low-balance threshold", "granted left"],
                   [[customer.external_id, w.unit, w.balance, w.credit_limit, w.low_balance_threshold or "-",
                     w.granted_remaining]])

    def _ledger(self, *, customer, limit, **_):
        entries = list(selectors.ledger(wallet=selectors.wallet_of(customer=customer)).order_by("-id")[:limit])
        self.table(["id", "when", "kind", "amount", "balance after", "caused by", "reason"],
                   [[e.id, e.created_at.isoformat(timespec="seconds"), e.kind, e.amount, e.balance_after,
                     e.caused_by, e.reason] for e in reversed(entries)])

    def _configure(self, *, customer, unit, credit_limit, low_balance_threshold, operator, **_):
        wallet, created = ledger.configure_wallet(
            customer=customer, unit=unit, credit_limit=_amount(credit_limit) if credit_limit else None,
            low_balance_threshold=_amount(low_balance_threshold) if low_balance_threshold else None,
            actor=f"operator:{operator}")
        self.stdout.write(f"{'created' if created else 'updated'} wallet of {customer.external_id} ({wallet.unit})")

    def _top_up(self, *, customer, amount, reason, key, operator, **_):
        posted = ledger.top_up(customer=customer, amount=_amount(amount), idempotency_key=key,
                               caused_by=f"operator:{operator}", reason=reason)
        verb = "credited" if posted.created else "already credited (same key)"
        self.stdout.write(f"{verb} {posted.entry.amount}; balance {posted.entry.balance_after}")

    def _adjust(self, *, customer, amount, reason, key, operator, **_):
        posted = ledger.adjust_balance(customer=customer, amount=_amount(amount), reason=reason, actor=operator,
                                       idempotency_key=key)
        self.stdout.write(f"adjusted by {posted.entry.amount}; balance {posted.entry.balance_after} (audited)")
