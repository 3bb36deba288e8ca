from __future__ import annotations

import argparse
from datetime import datetime

from tarifa.core.commands import TarifaCommand
from tarifa.payments.selectors import payment_stats
from tarifa.payments.services.checking import check_now
from tarifa.payments.services.invoices import close_month
from tarifa.tenants.selectors import tenant_by_slug


class Command(TarifaCommand):
    help = ("Payment checks: stats (by status, due now, next checks, failing credentials); check one invoice now; "
            "run the monthly close now.")

    def add_arguments(self, parser):
        sub = parser.add_subparsers(dest="action", required=True)
        stats = sub.add_parser("stats", help="Counts by status, checks due now, next check times, failing credentials.")
        stats.add_argument("--tenant", help="Tenant slug (default: all).")
        check = sub.add_parser("check", help="Ask the gateway about one invoice now.")
        check.add_argument("--tenant", required=True)
        check.add_argument("--reference", required=True)
        close = sub.add_parser("close", help="Run the monthly close now (the scheduler runs it every 15 minutes): "
                                             "first invoices of the month just ended, adjustments, credit notes.")
        close.add_argument("--at", type=_aware_time, help="As of this ISO time with its offset, instead of now "
                                                          "(replaying a close the scheduler missed).")

    def handle(self, *args, action, tenant=None, **options):
        if action == "close":
            made = close_month(now=options["at"])
            self.stdout.write(f"close: {made.invoices} invoices, {made.adjustments} adjustment invoices, "
                              f"{made.credit_notes} credit notes")
            return
        owner = tenant_by_slug(slug=tenant) if tenant else None
        if action == "check":
            run = check_now(tenant=owner, reference=options["reference"], worker_id="cli")
            outcome = "paid" if run.paid else "failed" if run.failed else "expired" if run.expired else (
                "not open" if not run.checked else "not paid yet")
            self.stdout.write(f"{options['reference']}: {outcome}")
            return
        stats = payment_stats(tenant=owner)
        self.table(["invoices", "count"], sorted(stats["invoices"].items()))
        self.table(["checks", "count"], sorted(stats["checks"].items()))
        self.stdout.write(f"due now: {stats['due_now']} (oldest {stats['oldest_due'] or '-'})")
        self.stdout.write("next checks: " + (", ".join(t.isoformat(timespec="seconds") for t in stats["next_checks"])
                                             or "-"))
        if stats["failing_credentials"]:
            self.table(["tenant", "gateway", "status", "failures", "last error"],
                       [[c["tenant"], c["gateway"], c["status"], c["consecutive_failures"], c["last_error"][:60]]
                        for c in stats["failing_credentials"]])
        else:
            self.stdout.write("failing credentials: none")


def _aware_time(text: str) -> datetime:
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an ISO time such as 2026-01-01T03:05:00+00:00: {text!r}") from None
    if moment.tzinfo is None:
        raise argparse.ArgumentTypeError(f"needs a UTC offset (2026-01-01T03:05:00+00:00): {text!r}")
    return moment
