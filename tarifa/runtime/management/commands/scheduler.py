from __future__ import annotations

from tarifa.core.commands import ServerCommand
from tarifa.runtime.scheduler import Scheduler


class Command(ServerCommand):
    help = "Run the scheduler: enqueue periodic jobs at their cron ticks (safe to run more than one)."

    def handle(self, *args, **options):
        Scheduler().run()
