"""The wallet, billing and reversal endpoints, and the CLI."""

from __future__ import annotations

from decimal import Decimal

import pytest
from django.core.management import call_command
from django.test import Client, override_settings

from tarifa.metering.models import UsageRecord
from tarifa.runtime.models import Job
from tarifa.runtime.testing import drain
from tarifa.wallets.models import AuditEntry, Wallet
from tarifa.wallets.tests.conftest import at, tokens  # noqa: F401

pytestmark = pytest.mark.django_db


@pytest.fixture
def prepaid(api, token_plan):
    assert api.post("/api/v1/customers", {"external_id": "org-9", "billing_mode": "prepaid"}).status_code == 201
    assert api.post("/api/v1/customers/org-9/subscriptions", {"plan": "ai", "starts_on": "2025-01-01"}).status_code in (200, 201)
    response = api.put("/api/v1/customers/org-9/wallet", {"low_balance_threshold": "2"})
    assert response.status_code == 201 and response.json()["unit"] == "BRL"
    return api


def _figures(body: dict) -> dict:
    return {k: Decimal(v) if isinstance(v, str) else v for k, v in body.items()}


def _ingest(api, records):
    response = api.post("/api/v1/usage", {"records": records})
    assert response.status_code == 200 and response.json()["accepted"] == len(records), response.json()


def test_top_ups_are_idempotent_and_the_ledger_links_debits_to_usage(prepaid):
    api = prepaid
    first = api.post("/api/v1/customers/org-9/wallet/top-ups", {"amount": "5.00", "idempotency_key": "pay-1"})
    again = api.post("/api/v1/customers/org-9/wallet/top-ups", {"amount": "5.00", "idempotency_key": "pay-1"})
    assert (first.status_code, again.status_code) == (201, 200) and first.json()["id"] == again.json()["id"]
    clash = api.post("/api/v1/customers/org-9/wallet/top-ups", {"amount": "6.00", "idempotency_key": "pay-1"})
    assert clash.status_code == 409 and clash.json()["code"] == "idempotency_conflict"
    bad = api.post("/api/v1/customers/org-9/wallet/top-ups", {"amount": "0", "idempotency_key": "pay-2"})
    assert bad.status_code == 422 and bad.json()["code"] == "invalid_amount"
    _ingest(api, [tokens("u1", "org-9", 1000), tokens("u2", "org-9", 3000, model="GPT-4o-mini-2024")])
    result = api.post("/api/v1/billing/process", {"customer": "org-9"}).json()
    assert _figures(result) == {"processed": 2, "charged": 2, "failed": 0, "amount_charged": Decimal("1.30")}
    wallet = api.get("/api/v1/customers/org-9/wallet").json()
    assert (Decimal(wallet["balance"]), Decimal(wallet["available"])) == (Decimal("3.7"), Decimal("3.7"))
    ledger = api.get("/api/v1/customers/org-9/wallet/ledger").json()["items"]
    assert [e["kind"] for e in ledger] == ["top_up", "usage_debit"]
    assert ledger[1]["usage_ids"] == ["u1", "u2"] and Decimal(ledger[1]["amount"]) == Decimal("-1.3")
    page = api.get("/api/v1/customers/org-9/wallet/ledger", limit=1).json()
    assert len(page["items"]) == 1 and page["next_cursor"]
    usage = api.get("/api/v1/usage", customer="org-9").json()["items"]
    assert usage[1]["rate"]["prefix"] == "gpt-4o-mini" and usage[1]["wallet_entry_id"] == ledger[1]["id"]


def test_process_answers_counts_and_failures_and_can_run_async(prepaid):
    api = prepaid
    api.post("/api/v1/customers/org-9/wallet/top-ups", {"amount": "2", "idempotency_key": "k"})
    _ingest(api, [tokens("p1", "org-9", 1500, at(1, 1)), tokens("p2", "org-9", 1000, at(1, 2))])
    result = api.post("/api/v1/billing/process", {"all": True}).json()
    assert _figures(result) == {"processed": 2, "charged": 1, "failed": 1, "amount_charged": Decimal("1.50")}
    stats = api.get("/api/v1/billing/stats").json()
    assert _figures(stats["overall"]["charged"]) == {"count": 1, "amount": Decimal("1.5")}
    assert _figures(stats["overall"]["failed"]) == {"count": 1, "amount": Decimal("1")}
    assert stats["customers"][0]["customer"] == "org-9"
    assert api.post("/api/v1/billing/process", {"all": True}).json()["failed"] == 1  # tried again, still short
    api.post("/api/v1/customers/org-9/wallet/top-ups", {"amount": "1", "idempotency_key": "k2"})
    queued = api.post("/api/v1/billing/process", {"usage_ids": ["p2"], "async": True})
    assert queued.status_code == 202 and Job.objects.filter(pk=queued.json()["job_id"], type="billing.process").exists()
    drain()
    assert UsageRecord.objects.get(external_id="p2").status == "billed"
    assert api.post("/api/v1/billing/process", {"usage_ids": ["p2"]}).json()["processed"] == 0  # nothing left
    for body in ({}, {"all": True, "customer": "org-9"}):
        response = api.post("/api/v1/billing/process", body)
        assert response.status_code == 422 and response.json()["code"] == "invalid_scope"
    assert api.post("/api/v1/billing/process", {"customer": "nobody"}).status_code == 404


def test_reverse_endpoint_refunds_once(prepaid):
    api = prepaid
    api.post("/api/v1/customers/org-9/wallet/top-ups", {"amount": "5", "idempotency_key": "k"})
    _ingest(api, [tokens("v1", "org-9", 2000)])
    api.post("/api/v1/billing/process", {"all": True})
    first = api.post("/api/v1/usage/v1/reverse", {"reason": "bad answer"})
    again = api.post("/api/v1/usage/v1/reverse", {"reason": "bad answer"})
    assert first.status_code == 200 and first.json()["reversed"] and first.json()["refund_entry_id"]
    assert again.json()["reversed"] is False and again.json()["usage"]["status"] == "reversed"
    assert Decimal(api.get("/api/v1/customers/org-9/wallet").json()["balance"]) == 5
    assert api.post("/api/v1/usage/nope/reverse", {"reason": "x"}).status_code == 404


def test_cron_endpoint_needs_the_secret(prepaid):
    client = Client()
    with override_settings(TARIFA_CRON_SECRET=""):
        response = client.post("/api/v1/cron/process-billing")
        assert response.status_code == 403 and response.json()["code"] == "cron_disabled"
    with override_settings(TARIFA_CRON_SECRET="s3cret"):
        assert client.post("/api/v1/cron/process-billing", headers={"X-Cron-Secret": "wrong"}).status_code == 401
        _ingest(prepaid, [tokens("c1", "org-9", 1000)])
        response = client.post("/api/v1/cron/process-billing", headers={"X-Cron-Secret": "s3cret"})
        assert response.status_code == 200
        assert _figures(response.json()) == {"tenants": 1, "processed": 1, "charged": 0, "failed": 1,
                                             "amount_charged": 0}


def test_wallet_settings_and_bad_input(prepaid):
    api = prepaid
    assert api.put("/api/v1/customers/org-9/wallet", {"credit_limit": "-1"}).json()["code"] == "invalid_credit_limit"
    assert api.put("/api/v1/customers/org-9/wallet", {"unit": "b"}).json()["code"] == "invalid_unit"
    response = api.put("/api/v1/customers/org-9/wallet", {"credit_limit": "10", "low_balance_threshold": None})
    assert response.status_code == 200 and Decimal(response.json()["available"]) == 10
    assert response.json()["low_balance_threshold"] is None
    assert AuditEntry.objects.filter(action="configure").count() == 1
    assert api.get("/api/v1/customers/nobody/wallet").status_code == 404
    api.post("/api/v1/customers", {"external_id": "post"})
    assert api.get("/api/v1/customers/post/wallet").json()["code"] == "wallet_not_found"
    assert api.patch("/api/v1/customers/post", {"billing_mode": "monthly"}).json()["code"] == "invalid_billing_mode"


def test_cli_top_up_adjust_process_stats_reverse_and_reconcile(prepaid, tenant, capsys):
    slug = tenant.slug
    call_command("wallet", "top-up", "--tenant", slug, "--customer", "org-9", "--amount", "3", "--key", "cli-1")
    call_command("wallet", "top-up", "--tenant", slug, "--customer", "org-9", "--amount", "3", "--key", "cli-1")
    call_command("wallet", "adjust", "--tenant", slug, "--customer", "org-9", "--amount", "-1", "--reason", "fee",
                 "--operator", "rui")
    assert Wallet.objects.get().balance == Decimal("2")
    assert AuditEntry.objects.get(action="adjustment").actor == "rui"
    _ingest(prepaid, [tokens("cli-u", "org-9", 1000)])
    call_command("billing", "process", "--tenant", slug, "--all")
    call_command("billing", "stats", "--tenant", slug)
    call_command("usage", "reverse", "--tenant", slug, "cli-u", "--reason", "test")
    call_command("wallet", "show", "--tenant", slug, "--customer", "org-9")
    call_command("wallet", "ledger", "--tenant", slug, "--customer", "org-9")
    call_command("billing", "reconcile")
    out = capsys.readouterr().out
    assert "already credited" in out and "processed 1: charged 1 (1.00), failed 0" in out
    assert "reversed cli-u" in out and "every wallet balance equals its ledger" in out
    Wallet.objects.update(balance=Decimal("7"))
    with pytest.raises(SystemExit) as exit_:
        call_command("billing", "reconcile")
    assert exit_.value.code == 1


def test_amounts_beyond_a_money_column_are_refused_not_500(prepaid):
    """Found by schemathesis: a credit limit of 3e16 and a top-up of 2e88 were server errors
    (PostgreSQL's numeric overflow), and a seventh decimal place was rounded away without a word."""
    api = prepaid
    for body in ({"credit_limit": "30884913672912600"}, {"low_balance_threshold": "1e20"},
                 {"credit_limit": "0.0000001"}):
        response = api.put("/api/v1/customers/org-9/wallet", body)
        assert response.status_code == 422 and response.json()["code"] == "invalid_number", body
    for amount in ("2.0493050234523718e+88", "1.0000001", "Infinity"):
        response = api.post("/api/v1/customers/org-9/wallet/top-ups", {"amount": amount, "idempotency_key": amount})
        assert response.status_code == 422, (amount, response.content)
    assert api.post("/api/v1/customers/org-9/wallet/top-ups",
                    {"amount": "90000000000000", "idempotency_key": "big-1"}).status_code == 201
    over = api.post("/api/v1/customers/org-9/wallet/top-ups", {"amount": "90000000000000", "idempotency_key": "big-2"})
    assert over.status_code == 409 and over.json()["code"] == "balance_out_of_range"
    assert Decimal(api.get("/api/v1/customers/org-9/wallet").json()["balance"]) == Decimal("90000000000000")
