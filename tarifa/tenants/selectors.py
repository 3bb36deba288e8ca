from __future__ import annotations

import hashlib
import hmac

from django.db.models import QuerySet

from tarifa.core.errors import NotFound
from tarifa.tenants.models import ApiKey, Customer, Tenant

KEY_SCHEME = "trf"


def hash_api_key(raw_key: str) -> str:
    # Keys carry 190 random bits, so a fast hash is enough; no password stretching needed.
    return hashlib.sha256(raw_key.encode()).hexdigest()


def api_key_for(*, raw_key: str) -> ApiKey | None:
    """The active key matching `raw_key`, or None. The lookup is by prefix, the match in constant time."""
    parts = raw_key.strip().split("_")
    if len(parts) != 3 or parts[0] != KEY_SCHEME:
        return None
    prefix = f"{parts[0]}_{parts[1]}"
    key = ApiKey.objects.select_related("tenant").filter(prefix=prefix, revoked_at__isnull=True).first()
    if key is None or not hmac.compare_digest(key.key_hash, hash_api_key(raw_key.strip())):
        return None
    return key


def tenant_by_slug(*, slug: str) -> Tenant:
    tenant = Tenant.objects.filter(slug=slug).first()
    if tenant is None:
        raise NotFound("tenant", slug, scope="")
    return tenant


def api_keys(*, tenant: Tenant | None = None) -> QuerySet[ApiKey]:
    keys = ApiKey.objects.select_related("tenant").order_by("tenant__slug", "created_at")
    return keys.filter(tenant=tenant) if tenant else keys


def customers(*, tenant: Tenant) -> QuerySet[Customer]:
    return Customer.objects.filter(tenant=tenant)


def customer_by_external_id(*, tenant: Tenant, external_id: str) -> Customer:
    customer = Customer.objects.filter(tenant=tenant, external_id=external_id).first()
    if customer is None:
        raise NotFound("customer", external_id)
    return customer
