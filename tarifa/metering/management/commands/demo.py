from __future__ import annotations

from django.conf import settings

from tarifa.core.commands import TarifaCommand
from tarifa.metering.selectors import summaries
from tarifa.metering.services.demo import DEMO_SLUG, create_demo
from tarifa.tenants.models import Customer, Tenant


class Command(TarifaCommand):
    help = "Create a demo tenant, plan and customers, import a generated Master.csv, fold it and show the summaries."

    def add_arguments(self, parser):
        parser.add_argument("--if-empty", action="store_true", help="Only when the database has no tenant yet.")
        parser.add_argument("--calls", type=int, default=3000)

    def handle(self, *args, if_empty, calls, **options):
        if if_empty and Tenant.objects.exists():
            return
        if Tenant.objects.filter(slug=DEMO_SLUG).exists():
            self.stdout.write(f"the demo tenant '{DEMO_SLUG}' exists already; "
                              f"issue a key with: tarifa tenant issue-key {DEMO_SLUG}")
            return
        tenant, issued, report, path = create_demo(var_dir=settings.VAR_DIR, calls=calls)
        c = report.counts
        self.stdout.write(f"Demo: imported {path} — {c['accepted']} answered calls rated, "
                          f"{c['skipped']} unanswered skipped, {c['rejected']} rejected\n")
        for customer in Customer.objects.filter(tenant=tenant).order_by("external_id"):
            for summary in summaries(customer=customer):
                self.stdout.write(f"{customer.external_id}  {customer.name}  {summary.period}  "
                                  f"total {summary.currency} {summary.total_amount:.2f}  ({summary.record_count} calls)")
                for line in sorted(summary.lines.all(), key=lambda l: l.kind):
                    self.stdout.write(f"    {line.kind:<20} {line.record_count:>5} calls  {line.quantity / 60:>9.1f} min"
                                      f"  allowance {line.allowance_used / 60:>7.1f} min  {line.charged_amount:>9.2f}")
                for usage in summary.allowance_usage.all():
                    self.stdout.write(f"    allowance {usage.allowance.code}: {usage.used / 60:.0f} of "
                                      f"{usage.included / 60:.0f} min ({usage.used * 100 / usage.included:.0f}%)")
        self.stdout.write(f"\nDemo tenant '{tenant.slug}' API key (shown once): {issued.raw_key}")
        self.stdout.write(f"Try: curl -H 'Authorization: Bearer {issued.raw_key}' "
                          f"http://{settings.TARIFA_BIND}/api/v1/customers/acct-1003/summaries")
