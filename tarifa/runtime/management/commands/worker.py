from __future__ import annotations

from tarifa.core.commands import ServerCommand
from tarifa.runtime.worker import Worker


class Command(ServerCommand):
    help = "Run a worker: claim due jobs and run them until SIGTERM/Ctrl-C (leased work is finished or released)."

    def add_arguments(self, parser):
        parser.add_argument("--queues", default="default,webhooks",
                            help="Comma-separated queues to take work from (default: default,webhooks).")
        parser.add_argument("--concurrency", type=int, default=1, help="Job slots (threads) in this process.")
        parser.add_argument("--batch-size", type=int, default=None, help="Jobs claimed per batch.")

    def handle(self, *args, queues, concurrency, batch_size, **options):
        Worker(
            queues=[q.strip() for q in queues.split(",") if q.strip()], concurrency=concurrency,
            batch_size=batch_size,
        ).run()
