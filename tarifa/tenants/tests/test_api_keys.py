from __future__ import annotations

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from tarifa.conftest import ApiClient
from tarifa.tenants.models import ApiKey
from tarifa.tenants.selectors import api_key_for, hash_api_key
from tarifa.tenants.services import create_tenant, issue_api_key, revoke_api_key

pytestmark = pytest.mark.django_db


def test_key_is_stored_hashed_with_visible_prefix():
    tenant, issued = create_tenant(name="Acme")
    stored = ApiKey.objects.get(tenant=tenant)
    assert issued.raw_key.startswith(stored.prefix + "_")
    assert issued.raw_key not in stored.key_hash
    assert stored.key_hash == hash_api_key(issued.raw_key)
    assert api_key_for(raw_key=issued.raw_key) == stored


def test_wrong_or_revoked_key_is_refused():
    tenant, issued = create_tenant(name="Acme")
    assert api_key_for(raw_key=issued.raw_key[:-1] + ("A" if issued.raw_key[-1] != "A" else "B")) is None
    assert api_key_for(raw_key="garbage") is None
    revoke_api_key(prefix=issued.api_key.prefix)
    assert api_key_for(raw_key=issued.raw_key) is None
    assert ApiClient(issued.raw_key).get("/api/v1/customers").status_code == 401


def test_both_auth_headers_are_accepted(tenant_and_key):
    _, key = tenant_and_key
    assert ApiClient(key).get("/api/v1/customers").status_code == 200
    assert ApiClient(key, header="X-Billing-API-Key").get("/api/v1/customers").status_code == 200
    response = ApiClient("trf_nothing_here").get("/api/v1/customers")
    assert response.status_code == 401
    assert response.json()["code"] == "unauthorized"


def test_tenant_cli_creates_lists_and_revokes(capsys):
    call_command("tenant", "create", "Beta Corp", "--timezone", "Europe/Lisbon", "--region", "PT")
    out = capsys.readouterr().out
    raw_key = out.strip().splitlines()[-1].split()[-1]
    key = api_key_for(raw_key=raw_key)
    assert key is not None and key.tenant.slug == "beta-corp" and key.tenant.default_phone_region == "PT"
    call_command("tenant", "keys", "--tenant", "beta-corp")
    listing = capsys.readouterr().out
    assert key.prefix in listing and raw_key not in listing
    call_command("tenant", "revoke-key", key.prefix)
    assert api_key_for(raw_key=raw_key) is None


def test_tenant_cli_rejects_bad_input_with_one_line():
    with pytest.raises(CommandError, match="invalid_timezone"):
        call_command("tenant", "create", "X", "--timezone", "Mars/Olympus")
    create_tenant(name="Dup")
    with pytest.raises(CommandError, match="tenant_exists"):
        call_command("tenant", "create", "Dup")


def test_issue_second_key_both_work():
    tenant, first = create_tenant(name="Acme")
    second = issue_api_key(tenant=tenant, name="erp")
    assert api_key_for(raw_key=first.raw_key).tenant == tenant
    assert api_key_for(raw_key=second.raw_key).tenant == tenant
