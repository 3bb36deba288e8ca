"""Prepaid debits inside a fold's transaction.

The fold locks the wallets of its prepaid customers (after the summaries, always in id order,
so folds of a customer's two periods, top-ups and reversals never deadlock), asks per record
whether the wallet covers it, and posts one usage_debit per wallet and batch that links the
records it paid for. A record the wallet cannot cover is not charged at all.
"""

from __future__ import annotations

from decimal import Decimal

from tarifa.wallets.models import LedgerEntry, Wallet
from tarifa.wallets.services.ledger import (
    GivenBack, covers, move_balance, queue_balance_alerts, save_wallets, spend_grants,
)

ZERO = Decimal(0)


class PrepaidFunds:
    """The locked wallets of one fold and what it has taken from each so far; balances move only
    when the debits are posted."""

    def __init__(self, *, customer_ids: set[int], given_back: dict[int, GivenBack] | None = None):
        self.given_back = given_back  # a re-rate's refunds, by wallet id: taken again first
        self.wallets = {w.customer_id: w for w in
                        Wallet.objects.select_for_update().filter(customer_id__any=customer_ids).order_by("id")}
        self.taken: dict[int, list] = {}  # wallet id -> records debited (those passed one by one)
        self.counts: dict[int, int] = {}  # wallet id -> how many records it paid for
        self.spent: dict[int, Decimal] = {}  # wallet id -> their total

    def refusal(self, *, customer_id: int, amount: Decimal, currency: str) -> str:
        """Why the wallet cannot pay `amount` now ("" when it can)."""
        wallet = self.wallets.get(customer_id)
        if wallet is None:
            return "no_wallet"
        if wallet.unit != currency:
            return "wallet_unit_mismatch"
        if not covers(wallet=wallet, amount=amount, spent=self.spent.get(wallet.id, ZERO)):
            return "insufficient_credits"
        return ""

    def take(self, *, customer_id: int, amount: Decimal, record=None, count: int = 1) -> None:
        """Debit `amount` for one record (linked to the entry when posted) or, from a set-based
        fold that links its records itself, for `count` records."""
        wallet = self.wallets[customer_id]
        self.spent[wallet.id] = self.spent.get(wallet.id, ZERO) + amount
        self.counts[wallet.id] = self.counts.get(wallet.id, 0) + count
        if record is not None:
            self.taken.setdefault(wallet.id, []).append(record)

    def post_debits(self, *, batch_id: int, caused_by: str) -> dict[int, int]:
        """Write one usage_debit per wallet that paid, link the records to it, move the balances.
        Returns each paying customer's ledger entry id."""
        by_id = {w.id: w for w in self.wallets.values()}
        entries, alerts = [], {}
        for wallet_id, count in self.counts.items():
            wallet = by_id[wallet_id]
            total = self.spent[wallet_id]
            alerts[wallet_id] = move_balance(wallet=wallet, kind=LedgerEntry.Kind.USAGE_DEBIT, amount=-total)
            entries.append(LedgerEntry(wallet=wallet, kind=LedgerEntry.Kind.USAGE_DEBIT, amount=-total,
                                       balance_after=wallet.balance, reason=f"usage batch {batch_id}",
                                       caused_by=caused_by[:200] or "fold", idempotency_key=f"fold:{batch_id}",
                                       record_count=count))
        if not entries:
            return {}
        LedgerEntry.objects.bulk_create(entries)
        for entry in entries:
            for record in self.taken.get(entry.wallet_id, ()):
                record.wallet_entry_id = entry.id
        paying = [by_id[i] for i in self.counts]
        spend_grants(wallets=paying, amounts=self.spent, entries={entry.wallet_id: entry.id for entry in entries},
                     given_back=self.given_back)
        save_wallets(paying)
        for wallet in paying:
            queue_balance_alerts(wallet=wallet, alerts=alerts[wallet.id])
        return {by_id[entry.wallet_id].customer_id: entry.id for entry in entries}
