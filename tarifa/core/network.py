"""Tenant-supplied URLs (webhook endpoints, gateway base URLs) must not make Tarifa call into its
own network (a database, a cloud metadata service) and show the answer back to the tenant."""

from __future__ import annotations

import ipaddress
import socket
from dataclasses import dataclass, field
from urllib.parse import urlparse, urlsplit, urlunsplit

from django.conf import settings

from tarifa.core.errors import DomainError


def check_public_url(url: str, *, field: str) -> None:
    """Refuse (422 private_url) a URL whose host is this machine or a non-public address literal,
    or a name that resolves to one now (422 invalid_<field>: not a URL at all)."""
    try:
        host = urlparse(url).hostname or ""
    except ValueError as exc:  # "http://[::1/": an unclosed IPv6 address
        raise DomainError(f"invalid_{field}", f"{field} is not a valid URL ({exc}).", field=field)
    refusal, _address = _checked(host)
    if refusal:
        raise DomainError("private_url", f"The URL may not point into Tarifa's own network: {refusal}.", field=field)


@dataclass(frozen=True)
class Destination:
    """Where to send a request for a tenant's URL: `refusal` says why not; else `url`, with a name
    replaced by the public address it was checked at, and the `headers` and request `extensions`
    that keep the name for the server (Host) and for TLS (the name the certificate must carry)."""

    refusal: str
    url: str
    headers: dict = field(default_factory=dict)
    extensions: dict = field(default_factory=dict)


def pinned_destination(url: str) -> Destination:
    """The URL's host checked (_checked) and, for a name, pinned to the address checked: a name
    resolved again by the HTTP client could lead elsewhere by then (DNS rebinding)."""
    parts = urlsplit(url)
    refusal, address = _checked(parts.hostname or "")
    if refusal or address is None:
        return Destination(refusal, url)
    literal = f"[{address}]" if address.version == 6 else str(address)
    userinfo, _at, host_port = parts.netloc.rpartition("@")
    netloc = (f"{userinfo}@" if userinfo else "") + literal + (f":{parts.port}" if parts.port else "")
    extensions = {"sni_hostname": parts.hostname} if parts.scheme == "https" else {}
    return Destination("", urlunsplit(parts._replace(netloc=netloc)), {"Host": host_port}, extensions)


def _checked(host: str):
    """(refusal, address): why Tarifa may not call `host` for a tenant ("" when it may), as it is,
    or its DNS name leads to, an address that is not public (loopback, private, link-local such as
    cloud metadata services, reserved); and the public address a name resolved to (None for an
    address literal or a name that did not resolve). TARIFA_PRIVATE_URLS allows any (receivers and
    gateways on the same machine or LAN)."""
    if settings.TARIFA_PRIVATE_URLS:
        return "", None
    host = host.strip("[]").rstrip(".").lower()
    if host == "localhost" or host.endswith(".localhost"):
        return f"{host} is this machine", None
    try:
        literal = ipaddress.ip_address(host)
    except ValueError:
        literal = None
    if literal is not None:
        return ("" if _public(literal) else f"{host} is not a public address"), None
    try:
        addresses = [ipaddress.ip_address(info[4][0].split("%")[0]) for info in socket.getaddrinfo(host, None)]
    except (OSError, UnicodeError, ValueError):
        return "", None  # not resolved: the request then fails on the name, and says so
    for address in sorted(set(addresses), key=str):
        if not _public(address):
            return f"{host} is {address}, not a public address", None
    return "", addresses[0] if addresses else None


def _public(address) -> bool:
    return (getattr(address, "ipv4_mapped", None) or address).is_global
