from __future__ import annotations

import sys

from tarifa.core.commands import TarifaCommand
from tarifa.metering.services.reconciliation import find_differences, rebuild_summary
from tarifa.tenants.models import Customer
from tarifa.tenants.selectors import customer_by_external_id, tenant_by_slug


class Command(TarifaCommand):
    help = "Billing checks: reconcile proves every summary equals the sum of its billed records (exit 1 if not)."

    def add_arguments(self, parser):
        sub = parser.add_subparsers(dest="action", required=True)
        reconcile = sub.add_parser("reconcile", help="Compare summaries with their records; --fix rebuilds them.")
        reconcile.add_argument("--tenant", help="Tenant slug (default: all).")
        reconcile.add_argument("--customer", help="Customer external_id (needs --tenant).")
        reconcile.add_argument("--period", help="YYYY-MM")
        reconcile.add_argument("--fix", action="store_true", help="Rebuild the summaries that differ from their records.")

    def handle(self, *args, action, tenant, customer, period, fix, **options):
        owner = tenant_by_slug(slug=tenant) if tenant else None
        who = customer_by_external_id(tenant=owner, external_id=customer) if (owner and customer) else None
        differences = find_differences(tenant=owner, customer=who, period=period)
        if not differences:
            self.stdout.write("reconcile: every summary equals the sum of its billed records")
            return
        self.table(["customer", "period", "kind", "field", "summary", "records"],
                   [[d.customer, d.period, d.kind, d.field, d.summary_value, d.records_value] for d in differences])
        if fix:
            for customer_id, period_ in sorted({(d.customer_id, d.period) for d in differences}):
                rebuild_summary(customer=Customer.objects.get(pk=customer_id), period=period_)
            remaining = find_differences(tenant=owner, customer=who, period=period)
            self.stdout.write(f"rebuilt {len({(d.customer, d.period) for d in differences})} summaries; "
                              f"{len(remaining)} difference(s) remain")
            if not remaining:
                return
        self.stderr.write(f"reconcile: {len(differences)} difference(s) found")
        sys.exit(1)
