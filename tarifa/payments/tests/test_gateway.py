"""The PagSeguro client against the local fake: parsing, status mapping, errors and retries."""

from __future__ import annotations

import uuid
from decimal import Decimal

import pytest

from tarifa.payments.gateways import GatewayBadResponse, GatewayError, GatewayTransient, GatewayUnauthorized
from tarifa.payments.gateways.pagseguro import PagSeguro
from tarifa.payments.testing import FakePagSeguro


@pytest.fixture
def client(fake):
    return PagSeguro(base_url=fake.url, email=fake.email, token=fake.token, timeout=0.5, retry_pause=0.01,
                     limit_key=f"test-{uuid.uuid4()}", requests_per_minute=100_000)


def test_search_by_reference_reads_every_transaction(fake, client):
    assert client.transactions_by_reference("REF-1") == []
    fake.add("REF-1", code="AAA", status=1)
    fake.add("REF-1", code="BBB", status=3, gross="49900.00", fee="1990.00", method=2)
    found = client.transactions_by_reference("REF-1")
    assert [(t.code, t.status, t.is_paid) for t in found] == [("AAA", 1, False), ("BBB", 3, True)]
    paid = found[1]
    assert (paid.gross_amount, paid.fee_amount, paid.net_amount, paid.payment_method) == (
        Decimal("49900.00"), Decimal("1990.00"), Decimal("47910.00"), "boleto")
    assert "initialDate=" in fake.requests[-1] and "reference=REF-1" in fake.requests[-1]


def test_notification_lookup_reads_the_creditor_fee_and_latin1(fake, client):
    fake.add("REF-2", code="CCC", status=4, gross="10.00", fee="0.40", notification="NOTE-1")
    tx = client.transaction_by_notification("NOTE-1")
    assert (tx.code, tx.reference, tx.status, tx.fee_amount, tx.payment_method) == ("CCC", "REF-2", 4, Decimal("0.40"), "pix")
    with pytest.raises(GatewayError) as missing:
        client.transaction_by_notification("NOPE")
    assert missing.value.code == "not_found"


def test_errors_are_classified_and_transient_ones_retried(fake, client):
    fake.fail_next(500, 429)  # two transient answers, then the real one
    assert client.transactions_by_reference("R") == []
    assert len(fake.requests) == 3
    fake.fail_next(503, 503, 503)
    with pytest.raises(GatewayTransient):
        client.transactions_by_reference("R")
    fake.fail_next(401)
    with pytest.raises(GatewayUnauthorized):
        client.transactions_by_reference("R")
    fake.fail_next("malformed")
    with pytest.raises(GatewayBadResponse) as bad:
        client.transactions_by_reference("R")
    assert bad.value.code == "malformed_xml"
    fake.fail_next(400)
    with pytest.raises(GatewayError) as rejected:
        client.transactions_by_reference("R")
    assert rejected.value.code == "gateway_rejected" and "13005" in rejected.value.message
    fake.fail_next("slow:1.0", "slow:1.0", "slow:1.0")
    with pytest.raises(GatewayTransient) as slow:
        client.transactions_by_reference("R")
    assert slow.value.code == "timeout"


def test_unknown_status_and_hostile_xml_are_refused(fake, client):
    fake.add("R", code="X", status=42)
    with pytest.raises(GatewayBadResponse) as unknown:
        client.transactions_by_reference("R")
    assert unknown.value.code == "unknown_status"
    bomb = (b'<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;&lol;">]>'
            b"<transactionSearchResult>&lol2;</transactionSearchResult>")
    with pytest.raises(GatewayBadResponse):
        PagSeguro._parse(bomb)


def test_wrong_credentials_get_401(fake):
    client = PagSeguro(base_url=fake.url, email=fake.email, token="wrong", limit_key="t2")
    with pytest.raises(GatewayUnauthorized):
        client.transactions_by_reference("R")


def test_the_per_credential_rate_limit_stops_calls(fake):
    client = PagSeguro(base_url=fake.url, email=fake.email, token=fake.token, limit_key=f"tiny-{uuid.uuid4()}", requests_per_minute=2)
    client.transactions_by_reference("R")
    client.transactions_by_reference("R")
    with pytest.raises(GatewayTransient) as limited:
        client.transactions_by_reference("R")
    assert limited.value.code == "rate_limited" and len(fake.requests) == 2


def test_fake_serves_v3_search_too():
    server = FakePagSeguro()
    try:
        status, body, _pause = server.answer(f"/v3/transactions?email={server.email}&token={server.token}&reference=Z")
        assert status == 200 and "<resultsInThisPage>0</resultsInThisPage>" in body
    finally:
        server.close()
