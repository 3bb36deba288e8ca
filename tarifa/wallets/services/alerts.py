"""Balance alerts, raised by their own job after the ledger write that crossed the line."""

from __future__ import annotations

from tarifa.alerts.models import Alert
from tarifa.alerts.services import raise_alert
from tarifa.wallets.models import Wallet

MESSAGES = {
    Alert.Type.WALLET_LOW_BALANCE: "{customer}'s wallet is low: {balance} {unit} (threshold {threshold}).",
    Alert.Type.WALLET_DEPLETED: "{customer}'s wallet is depleted: {balance} {unit}.",
}


def raise_balance_alert(*, wallet_id: int, type: str, generation: int, balance: str) -> Alert | None:
    """One alert per wallet, type and crossing (the generation counts re-arming rises)."""
    wallet = Wallet.objects.select_related("customer__tenant").get(pk=wallet_id)
    threshold = None if wallet.low_balance_threshold is None else str(wallet.low_balance_threshold)
    return raise_alert(
        tenant=wallet.customer.tenant, customer=wallet.customer, type=type,
        key=f"{type}:{wallet.id}:{generation}",
        message=MESSAGES[type].format(customer=wallet.customer.external_id, balance=balance, unit=wallet.unit,
                                      threshold=threshold),
        data={"wallet_id": wallet.id, "balance": balance, "unit": wallet.unit, "threshold": threshold},
    )
