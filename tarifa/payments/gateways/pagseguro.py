"""PagSeguro's v2/v3 transactions API (XML, ISO-8859-1).

- search: GET /v2/transactions?email&token&reference (&initialDate, as the official PHP SDK sends:
  PagSeguro limits a search window, so we look back 180 days);
- notification: GET /v3/transactions/notifications/{code}?email&token.
Calls are limited per credential (shared through Redis when configured), time out, and are retried
with backoff on timeouts, 5xx and 429; 401 raises GatewayUnauthorized at once.
"""

from __future__ import annotations

import random
import time
from datetime import datetime, timedelta
from decimal import Decimal, InvalidOperation
from urllib.parse import urlencode

import httpcore
from defusedxml import ElementTree
from defusedxml.common import DefusedXmlException
from django.utils import timezone

from tarifa.core import ratelimit
from tarifa.payments.gateways.base import (
    KNOWN_STATUSES, GatewayBadResponse, GatewayError, GatewayRateLimited, GatewayTransaction, GatewayTransient,
    GatewayUnauthorized,
)

PAYMENT_METHODS = {"1": "credit_card", "2": "boleto", "3": "online_debit", "4": "pagseguro_balance",
                   "5": "oi_paggo", "7": "deposit", "11": "pix"}
SEARCH_DAYS = 180
RETRIES = 2  # after the first try
# httpcore (httpx's own transport) rather than httpx.Client: polling is CPU-bound on the client side
# and httpcore costs ~0.3 ms of CPU a request against httpx's ~0.8 ms. One pool per process, shared
# by the checking threads (it is thread-safe).
_pool = httpcore.ConnectionPool(max_connections=128, max_keepalive_connections=128, retries=0)


class PagSeguro:
    def __init__(self, *, base_url: str, email: str, token: str, timeout: float = 10.0, limit_key: str = "",
                 requests_per_minute: int = 300, retry_pause: float = 0.2):
        self.base_url = base_url.rstrip("/")
        self.auth = {"email": email, "token": token}
        self.timeout = timeout
        self.limit_key = limit_key or f"pagseguro:{email}"
        self.requests_per_minute = requests_per_minute
        self.retry_pause = retry_pause

    # --- the gateway interface ------------------------------------------------------

    def transactions_by_reference(self, reference: str) -> list[GatewayTransaction]:
        since = (timezone.now() - timedelta(days=SEARCH_DAYS)).strftime("%Y-%m-%dT%H:%M")
        root = self._get("/v2/transactions", {"reference": reference, "initialDate": since, "maxPageResults": "100"})
        if root.tag != "transactionSearchResult":
            raise GatewayBadResponse("unexpected_document", f"Expected transactionSearchResult, got <{root.tag}>.")
        found = root.find("transactions")
        return [self._transaction(node, fee_path="feeAmount") for node in (found if found is not None else [])
                if node.tag == "transaction"]

    def transaction_by_notification(self, code: str) -> GatewayTransaction:
        root = self._get(f"/v3/transactions/notifications/{code}", {})
        if root.tag != "transaction":
            raise GatewayBadResponse("unexpected_document", f"Expected transaction, got <{root.tag}>.")
        return self._transaction(root, fee_path="creditorFees/intermediationFeeAmount")

    # --- HTTP -----------------------------------------------------------------------

    def _get(self, path: str, params: dict):
        last: GatewayError | None = None
        for attempt in range(RETRIES + 1):
            if attempt:
                time.sleep(random.uniform(0, self.retry_pause * 2 ** (attempt - 1)))  # full jitter
            if not ratelimit.hit(limit=f"{self.requests_per_minute}/minute", key=self.limit_key):
                raise GatewayRateLimited("rate_limited", "This credential's request budget is spent for now.")
            url = f"{self.base_url}{path}?{urlencode({**self.auth, **params})}"
            try:
                response = _pool.request("GET", url, extensions={"timeout": {
                    "connect": self.timeout, "read": self.timeout, "write": self.timeout, "pool": self.timeout}})
            except httpcore.TimeoutException:
                last = GatewayTransient("timeout", f"PagSeguro did not answer within {self.timeout} s.")
                continue
            except (httpcore.NetworkError, httpcore.ProtocolError, httpcore.UnsupportedProtocol) as exc:
                last = GatewayTransient("connection_error", f"PagSeguro could not be reached: {exc!r}")
                continue
            status = response.status
            if status == 401:
                raise GatewayUnauthorized("unauthorized", "PagSeguro refused the e-mail/token (401).")
            if status == 429:
                last = GatewayRateLimited("gateway_rate_limited", "PagSeguro answered 429 Too Many Requests.")
                continue
            if status >= 500:
                last = GatewayTransient("gateway_error", f"PagSeguro answered {status}.")
                continue
            if status == 404:
                raise GatewayError("not_found", "PagSeguro does not know this code (404).")
            root = self._parse(response.content)
            if status == 400 or root.tag == "errors":
                errors = "; ".join(f"{e.findtext('code')}: {e.findtext('message')}" for e in root.iter("error"))
                raise GatewayError("gateway_rejected", f"PagSeguro rejected the request: {errors or status}")
            if status != 200:
                raise GatewayError("unexpected_status", f"PagSeguro answered {status}.")
            return root
        assert last is not None
        raise last

    @staticmethod
    def _parse(content: bytes):
        try:  # bytes: the parser honours the document's declared ISO-8859-1
            return ElementTree.fromstring(content)
        except (ElementTree.ParseError, DefusedXmlException, ValueError) as exc:
            raise GatewayBadResponse("malformed_xml", f"PagSeguro sent XML we cannot read: {exc}")

    @staticmethod
    def _transaction(node, *, fee_path: str) -> GatewayTransaction:
        raw_status = (node.findtext("status") or "").strip()
        try:
            status = int(raw_status)
        except ValueError:
            raise GatewayBadResponse("bad_status", f"Transaction status '{raw_status}' is not a number.")
        if status not in KNOWN_STATUSES:
            raise GatewayBadResponse("unknown_status", f"Transaction status {status} is not one PagSeguro documents.")
        code = (node.findtext("code") or "").strip()
        if not code:
            raise GatewayBadResponse("missing_code", "A transaction without a code.")
        fee = node.findtext(fee_path)
        if fee is None and fee_path != "feeAmount":
            fee = node.findtext("feeAmount")
        return GatewayTransaction(
            code=code, reference=(node.findtext("reference") or "").strip(), status=status,
            gross_amount=_decimal(node.findtext("grossAmount")), fee_amount=_decimal(fee),
            net_amount=_decimal(node.findtext("netAmount")),
            payment_method=PAYMENT_METHODS.get((node.findtext("paymentMethod/type") or "").strip(), ""),
            date=_datetime(node.findtext("date")), last_event_date=_datetime(node.findtext("lastEventDate")),
        )


def _decimal(raw: str | None) -> Decimal | None:
    if raw is None or not raw.strip():
        return None
    try:
        return Decimal(raw.strip())
    except InvalidOperation:
        raise GatewayBadResponse("bad_amount", f"Amount '{raw}' is not a decimal.")


def _datetime(raw: str | None) -> datetime | None:
    if not raw:
        return None
    try:
        return datetime.fromisoformat(raw.strip())
    except ValueError:
        return None
