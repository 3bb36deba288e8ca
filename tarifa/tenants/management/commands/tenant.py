from __future__ import annotations

from tarifa.core.commands import TarifaCommand
from tarifa.tenants import selectors, services


class Command(TarifaCommand):
    help = "Manage tenants and their API keys (create, list, keys, issue-key, revoke-key)."

    def add_arguments(self, parser):
        sub = parser.add_subparsers(dest="action", required=True)
        create = sub.add_parser("create", help="Create a tenant and print its first API key (shown once).")
        create.add_argument("name")
        create.add_argument("--slug")
        create.add_argument("--timezone", default="America/Sao_Paulo")
        create.add_argument("--region", default="BR", help="Default phone region (ISO 3166 code).")
        create.add_argument("--currency", default="BRL")
        sub.add_parser("list", help="List tenants.")
        keys = sub.add_parser("keys", help="List API keys (prefixes only).")
        keys.add_argument("--tenant")
        issue = sub.add_parser("issue-key", help="Issue another API key for a tenant.")
        issue.add_argument("tenant")
        issue.add_argument("--name", default="default")
        revoke = sub.add_parser("revoke-key", help="Revoke an API key by its prefix.")
        revoke.add_argument("prefix")

    def handle(self, *args, action, **options):
        getattr(self, "_" + action.replace("-", "_"))(**options)

    def _create(self, *, name, slug, timezone, region, currency, **_):
        tenant, issued = services.create_tenant(
            name=name, slug=slug, timezone_name=timezone, default_phone_region=region, default_currency=currency
        )
        self.stdout.write(f"tenant {tenant.slug} created")
        self.stdout.write(f"API key (shown once, keep it safe): {issued.raw_key}")

    def _list(self, **_):
        from tarifa.tenants.models import Tenant

        self.table(["slug", "name", "timezone", "region", "currency"],
                   [[t.slug, t.name, t.timezone, t.default_phone_region, t.default_currency]
                    for t in Tenant.objects.order_by("slug")])

    def _keys(self, *, tenant, **_):
        owner = selectors.tenant_by_slug(slug=tenant) if tenant else None
        self.table(["prefix", "tenant", "name", "created", "last used", "revoked"],
                   [[k.prefix, k.tenant.slug, k.name, f"{k.created_at:%Y-%m-%d %H:%M}",
                     f"{k.last_used_at:%Y-%m-%d %H:%M}" if k.last_used_at else "-",
                     f"{k.revoked_at:%Y-%m-%d %H:%M}" if k.revoked_at else "-"]
                    for k in selectors.api_keys(tenant=owner)])

    def _issue_key(self, *, tenant, name, **_):
        issued = services.issue_api_key(tenant=selectors.tenant_by_slug(slug=tenant), name=name)
        self.stdout.write(f"API key (shown once, keep it safe): {issued.raw_key}")

    def _revoke_key(self, *, prefix, **_):
        key = services.revoke_api_key(prefix=prefix)
        self.stdout.write(f"revoked {key.prefix} of tenant {key.tenant.slug}")
