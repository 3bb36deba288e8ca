"""Writes of the tenants domain: tenants, API keys and customers."""

from __future__ import annotations

import secrets
import zoneinfo
from dataclasses import dataclass

import phonenumbers
from django.db import IntegrityError, transaction
from django.utils import timezone
from django.utils.text import slugify
from email_validator import EmailNotValidError, validate_email

from tarifa.core.errors import Conflict, DomainError, NotFound
from tarifa.core.money import clean_currency_code
from tarifa.core.text import check_lengths
from tarifa.runtime.services import enqueue
from tarifa.tenants.models import ApiKey, Customer, Tenant
from tarifa.tenants.selectors import KEY_SCHEME, hash_api_key

CUSTOMER_FIELDS = ("name", "email", "phone", "metadata", "billing_mode")


@dataclass(frozen=True)
class IssuedKey:
    api_key: ApiKey
    raw_key: str  # shown once, never stored


def create_tenant(
    *, name: str, slug: str | None = None, timezone_name: str = "America/Sao_Paulo",
    default_phone_region: str = "BR", default_currency: str = "BRL",
) -> tuple[Tenant, IssuedKey]:
    slug = slug or slugify(name)
    if not slug:
        raise DomainError("invalid_slug", "A tenant needs a name or slug made of letters or digits.", field="slug")
    check_timezone(timezone_name)
    check_region(default_phone_region)
    default_currency = clean_default_currency(default_currency)
    check_lengths(Tenant, {"name": name, "slug": slug})
    with transaction.atomic():
        if Tenant.objects.filter(slug=slug).exists():
            raise Conflict("tenant_exists", f"A tenant with slug '{slug}' already exists.", field="slug")
        tenant = Tenant.objects.create(
            slug=slug, name=name, timezone=timezone_name,
            default_phone_region=default_phone_region.upper(), default_currency=default_currency,
        )
        issued = issue_api_key(tenant=tenant, name="default")
    return tenant, issued


def issue_api_key(*, tenant: Tenant, name: str = "default") -> IssuedKey:
    prefix = f"{KEY_SCHEME}_{secrets.token_hex(4)}"
    raw_key = f"{prefix}_{secrets.token_urlsafe(24).replace('_', 'x')}"
    api_key = ApiKey.objects.create(tenant=tenant, name=name, prefix=prefix, key_hash=hash_api_key(raw_key))
    return IssuedKey(api_key=api_key, raw_key=raw_key)


def revoke_api_key(*, prefix: str) -> ApiKey:
    key = ApiKey.objects.filter(prefix=prefix).first()
    if key is None:
        raise NotFound("api_key", prefix)
    if key.revoked_at is None:
        key.revoked_at = timezone.now()
        key.save(update_fields=["revoked_at"])
    return key


def touch_api_key(*, api_key: ApiKey) -> None:
    """Record use at most once a minute, so authentication does not write on every request."""
    now = timezone.now()
    if api_key.last_used_at is None or (now - api_key.last_used_at).total_seconds() > 60:
        ApiKey.objects.filter(pk=api_key.pk).update(last_used_at=now)
        api_key.last_used_at = now


# --- customers -----------------------------------------------------------------


def normalize_phone(*, raw: str, region: str) -> str:
    if not raw:
        return ""
    try:
        number = phonenumbers.parse(raw, region)
    except phonenumbers.NumberParseException as exc:
        raise DomainError("invalid_phone", f"'{raw}' is not a phone number: {exc}.", field="phone")
    if not phonenumbers.is_valid_number(number):
        raise DomainError("invalid_phone", f"'{raw}' is not a valid phone number for region {region}.", field="phone")
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)


def normalize_email(*, raw: str) -> str:
    if not raw:
        return ""
    try:
        return validate_email(raw, check_deliverability=False).normalized
    except EmailNotValidError as exc:
        raise DomainError("invalid_email", f"'{raw}' is not a valid e-mail address: {exc}", field="email")


def clean_customer_fields(*, tenant: Tenant, fields: dict) -> dict:
    cleaned = {key: value for key, value in fields.items() if key in CUSTOMER_FIELDS and value is not None}
    if "phone" in cleaned:
        cleaned["phone"] = normalize_phone(raw=cleaned["phone"], region=tenant.default_phone_region)
    if "email" in cleaned:
        cleaned["email"] = normalize_email(raw=cleaned["email"])
    if "metadata" in cleaned and not isinstance(cleaned["metadata"], dict):
        raise DomainError("invalid_metadata", "metadata must be a JSON object.", field="metadata")
    if "billing_mode" in cleaned and cleaned["billing_mode"] not in Customer.BillingMode.values:
        raise DomainError("invalid_billing_mode", "billing_mode is 'postpaid' or 'prepaid'.", field="billing_mode")
    check_lengths(Customer, cleaned)
    return cleaned


def create_customer(*, tenant: Tenant, external_id: str, **fields) -> tuple[Customer, bool]:
    """Create a customer, idempotent on `external_id`.

    Returns (customer, created). Repeating the same request returns the stored customer; the
    same external_id with different data is a conflict (updates go through update_customer),
    so a retried create can never silently overwrite a newer update.
    """
    external_id = (external_id or "").strip()
    if not external_id:
        raise DomainError("invalid_external_id", "external_id must not be empty.", field="external_id")
    if "/" in external_id:  # it names the customer in the API's addresses, where a / cannot be
        raise DomainError("invalid_external_id", "external_id must not contain '/'.", field="external_id")
    check_lengths(Customer, {"external_id": external_id})
    cleaned = clean_customer_fields(tenant=tenant, fields=fields)
    existing = Customer.objects.filter(tenant=tenant, external_id=external_id).first()
    if existing is None:
        try:
            with transaction.atomic():
                return Customer.objects.create(tenant=tenant, external_id=external_id, **cleaned), True
        except IntegrityError:  # a concurrent create of the same external_id won the race
            existing = Customer.objects.get(tenant=tenant, external_id=external_id)
    differing = [key for key, value in cleaned.items() if getattr(existing, key) != value]
    if differing:
        raise Conflict(
            "customer_exists",
            f"Customer '{external_id}' already exists with different {', '.join(differing)}; use PATCH to change it.",
            field=differing[0],
        )
    return existing, False


def update_customer(*, customer: Customer, **fields) -> Customer:
    """Change a customer's fields. A customer turned postpaid has the usage its wallet could not pay
    (failed, insufficient_credits or no_wallet) charged again by the workers: postpaid usage never
    fails for credit, and nothing else would retry it (no top-up is coming)."""
    cleaned = clean_customer_fields(tenant=customer.tenant, fields=fields)
    turned_postpaid = (cleaned.get("billing_mode") == Customer.BillingMode.POSTPAID
                       and customer.billing_mode != Customer.BillingMode.POSTPAID)
    for key, value in cleaned.items():
        setattr(customer, key, value)
    if cleaned:
        with transaction.atomic():
            customer.save(update_fields=[*cleaned, "updated_at"])
            if turned_postpaid:  # by job type: wallets builds on tenants, not the other way round
                enqueue("wallets.retry_failed_usage", payload={"customer_id": customer.id})
    return customer


def check_timezone(name: str) -> None:
    try:
        zoneinfo.ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        raise DomainError("invalid_timezone", f"'{name}' is not an IANA time zone.", field="timezone")


def clean_default_currency(currency: str) -> str:
    """A tenant's default currency: an ISO 4217 code, which plans and invoices take when they name
    none (a plan may name a credit unit of its own; the tenant's column holds three letters)."""
    return clean_currency_code(currency, field="default_currency")


def check_region(region: str) -> None:
    if region.upper() not in phonenumbers.SUPPORTED_REGIONS:
        raise DomainError("invalid_region", f"'{region}' is not a phone region code.", field="default_phone_region")
