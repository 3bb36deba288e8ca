from __future__ import annotations

from django.conf import settings

from tarifa.core.commands import TarifaCommand
from tarifa.metering.selectors import pending_groups
from tarifa.metering.services.folding import fold_all_pending
from tarifa.metering.services.ingestion import mark_waiting_summaries
from tarifa.tenants.models import Customer


class Command(TarifaCommand):
    help = "Monthly revenue summaries: flush-batches folds all waiting usage now (--stats only shows it)."

    def add_arguments(self, parser):
        sub = parser.add_subparsers(dest="action", required=True)
        flush = sub.add_parser("flush-batches", help="Fold every waiting batch now, or show them with --stats.")
        flush.add_argument("--stats", action="store_true", help="Show pending batches per customer and period; fold nothing.")
        flush.add_argument("--batch-size", type=int, default=None)

    def handle(self, *args, action, stats, batch_size, **options):
        groups = pending_groups()
        names = dict(Customer.objects.filter(id__in={g[0] for g in groups}).values_list("id", "external_id"))
        size = batch_size or settings.TARIFA_FOLD_BATCH_SIZE
        if stats:
            self.table(["customer", "month", "year", "records waiting", "batches"],
                       [[names[c], int(p[5:]), int(p[:4]), n, -(-n // size)] for c, p, n in groups])
            self.stdout.write(f"total: {len(groups)} summaries, {sum(n for *_, n in groups)} records waiting, "
                              f"{sum(-(-n // size) for *_, n in groups)} batches of up to {size}")
            return
        mark_waiting_summaries()
        result = fold_all_pending(batch_size=size, folded_by="flush-batches")
        self.stdout.write(f"folded {result.records} records into {len(groups)} summaries in {result.batches} "
                          f"batches (charged {result.charged})")
