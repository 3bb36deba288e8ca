from __future__ import annotations

from tarifa.core.commands import TarifaCommand
from tarifa.runtime.scheduler import Scheduler


class Command(TarifaCommand):
    help = "Run the scheduler: enqueue periodic jobs at their cron ticks (safe to run more than one)."

    def handle(self, *args, **options):
        Scheduler().run()
