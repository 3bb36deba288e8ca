"""Tenant-supplied URLs (webhook endpoints, gateway base URLs) must not make Tarifa call into its
own network (a database, a cloud metadata service) and show the answer back to the tenant."""

from __future__ import annotations

import ipaddress
import socket
from urllib.parse import urlparse

from django.conf import settings

from tarifa.core.errors import DomainError


def check_public_url(url: str, *, field: str) -> None:
    """Refuse (422 private_url) a URL whose host is this machine or a non-public address literal,
    or a name that resolves to one now (422 invalid_<field>: not a URL at all)."""
    try:
        host = urlparse(url).hostname or ""
    except ValueError as exc:  # "http://[::1/": an unclosed IPv6 address
        raise DomainError(f"invalid_{field}", f"{field} is not a valid URL ({exc}).", field=field)
    refusal = private_address(host)
    if refusal:
        raise DomainError("private_url", f"The URL may not point into Tarifa's own network: {refusal}.", field=field)


def private_address(host: str) -> str:
    """Why Tarifa may not call `host` for a tenant ("" when it may): it is, or its DNS name leads
    to, an address that is not public (loopback, private, link-local such as cloud
    metadata services, reserved). TARIFA_PRIVATE_URLS allows them (receivers and gateways on the
    same machine or LAN). Names are resolved when used (each webhook delivery), so one that moves
    into a private network is caught then; one that resolves differently within that instant is not."""
    if settings.TARIFA_PRIVATE_URLS:
        return ""
    host = host.strip("[]").rstrip(".").lower()
    if host == "localhost" or host.endswith(".localhost"):
        return f"{host} is this machine"
    try:
        literal = ipaddress.ip_address(host)
    except ValueError:
        literal = None
    if literal is not None:
        return "" if _public(literal) else f"{host} is not a public address"
    try:
        addresses = {ipaddress.ip_address(info[4][0].split("%")[0]) for info in socket.getaddrinfo(host, None)}
    except (OSError, UnicodeError, ValueError):
        return ""  # not resolved: the request then fails on the name, and says so
    for address in sorted(addresses, key=str):
        if not _public(address):
            return f"{host} is {address}, not a public address"
    return ""


def _public(address) -> bool:
    return (getattr(address, "ipv4_mapped", None) or address).is_global
