from __future__ import annotations

import sys

from tarifa.core.commands import TarifaCommand
from tarifa.core.errors import DomainError
from tarifa.metering.periods import checked_period
from tarifa.metering.selectors import billing_stats
from tarifa.metering.services.processing import process_usage
from tarifa.metering.services.reconciliation import find_differences, rebuild_summary
from tarifa.payments.selectors import billing_gaps
from tarifa.tenants.models import Customer
from tarifa.tenants.selectors import customer_by_external_id, tenant_by_slug
from tarifa.wallets.services.reconciliation import find_wallet_differences


class Command(TarifaCommand):
    help = ("Billing: process charges waiting usage now; stats shows pending/charged/failed; reconcile proves "
            "summaries equal their records, wallets their ledgers and closed months their invoices (exit 1 if not).")

    def add_arguments(self, parser):
        sub = parser.add_subparsers(dest="action", required=True)
        reconcile = sub.add_parser("reconcile", help="Compare summaries with their records, wallets with their "
                                                     "ledgers, and closed months' summaries with their invoices and "
                                                     "credit notes; --fix rebuilds summaries.")
        reconcile.add_argument("--tenant", help="Tenant slug (default: all).")
        reconcile.add_argument("--customer", help="Customer external_id (needs --tenant).")
        reconcile.add_argument("--period", help="YYYY-MM")
        reconcile.add_argument("--fix", action="store_true", help="Rebuild the summaries that differ from their records.")
        process = sub.add_parser("process", help="Charge waiting and failed usage now (fold + prepaid debit).")
        process.add_argument("--tenant", required=True, help="Tenant slug.")
        scope = process.add_mutually_exclusive_group(required=True)
        scope.add_argument("--customer", help="Only this customer's usage.")
        scope.add_argument("--all", action="store_true", help="All of the tenant's usage.")
        stats = sub.add_parser("stats", help="Pending / charged / failed counts and amounts, per customer.")
        stats.add_argument("--tenant", required=True, help="Tenant slug.")
        stats.add_argument("--customer", help="Only this customer.")

    def handle(self, *args, action, **options):
        getattr(self, f"_{action}")(**options)

    def _process(self, *, tenant, customer=None, **_):
        owner = tenant_by_slug(slug=tenant)
        who = customer_by_external_id(tenant=owner, external_id=customer) if customer else None
        result = process_usage(tenant=owner, customer=who)
        self.stdout.write(f"processed {result.processed}: charged {result.charged} ({result.amount}), "
                          f"failed {result.failed}")

    def _stats(self, *, tenant, customer=None, **_):
        owner = tenant_by_slug(slug=tenant)
        who = customer_by_external_id(tenant=owner, external_id=customer) if customer else None
        stats = billing_stats(tenant=owner, customer=who)
        names = ["pending", "charged", "failed", "reversed", "unrated"]
        headers = ["customer"] + [f"{n} {part}" for n in names for part in ("count", "amount")]

        def row(label, figures):
            return [label] + [value for n in names
                              for value in (figures[n]["count"], "" if figures[n]["amount"] is None else figures[n]["amount"])]

        self.table(headers, [row(c["customer"], c) for c in stats["customers"]] + [row("TOTAL", stats["overall"])])

    def _reconcile(self, *, tenant, customer, period, fix, **_):
        period = checked_period(period)  # before the wallet check prints anything
        owner = tenant_by_slug(slug=tenant) if tenant else None
        if customer and not owner:
            raise DomainError("tenant_required", "--customer needs --tenant.")
        who = customer_by_external_id(tenant=owner, external_id=customer) if (owner and customer) else None
        wallet_differences = find_wallet_differences(tenant=owner, customer=who)
        if wallet_differences:
            self.table(["customer", "wallet check", "expected", "actual"],
                       [[d.customer, d.check, d.expected, d.actual] for d in wallet_differences])
        else:
            self.stdout.write("reconcile: every wallet balance equals its ledger and every debit its records")
        differences = find_differences(tenant=owner, customer=who, period=period)
        if not differences:
            self.stdout.write("reconcile: every summary equals the sum of its billed records")
        else:
            self.table(["customer", "period", "kind", "field", "summary", "records"],
                       [[d.customer, d.period, d.kind, d.field, d.summary_value, d.records_value] for d in differences])
        if differences and fix:
            for customer_id, period_ in sorted({(d.customer_id, d.period) for d in differences}):
                rebuild_summary(customer=Customer.objects.get(pk=customer_id), period=period_)
            remaining = find_differences(tenant=owner, customer=who, period=period)
            self.stdout.write(f"rebuilt {len({(d.customer, d.period) for d in differences})} summaries; "
                              f"{len(remaining)} difference(s) remain")
            differences = remaining
        gaps = billing_gaps(tenant=owner, customer=who, period=period)
        if gaps:
            self.table(["customer", "period", "summary", "invoiced", "invoices"],
                       [[g.customer, g.period, g.total, g.invoiced, g.problem] for g in gaps])
        else:
            self.stdout.write("reconcile: every closed month's summary equals its invoices less its credit notes")
        found = len(differences) + len(wallet_differences) + sum(not g.settles_itself for g in gaps)
        if found:
            self.stderr.write(f"reconcile: {found} difference(s) found")
            sys.exit(1)
