"""Payment gateways behind one small interface: look up transactions by reference, resolve a
notification code. `gateway_for(credential)` builds the client for a stored credential."""

from __future__ import annotations

from tarifa.payments.gateways.base import (  # noqa: F401
    Gateway, GatewayError, GatewayRateLimited, GatewayTransaction, GatewayTransient, GatewayUnauthorized,
    GatewayBadResponse,
)
from tarifa.payments.gateways.pagseguro import PagSeguro  # noqa: E402 (imported here, never lazily in pool threads)


def gateway_for(credential) -> Gateway:
    if credential.gateway == "pagseguro":
        return PagSeguro(base_url=credential.base_url, email=credential.email, token=credential.token,
                         timeout=credential.timeout_seconds, limit_key=f"pagseguro:{credential.id}",
                         requests_per_minute=credential.requests_per_minute)
    raise GatewayError("unknown_gateway", f"No client for gateway '{credential.gateway}'.")
