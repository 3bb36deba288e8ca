from __future__ import annotations

import signal
import threading

from django.conf import settings
from django.core.management import call_command

from tarifa.core.commands import ServerCommand
from tarifa.ops.logging import get_logger

log = get_logger(__name__)


class Command(ServerCommand):
    help = "Run everything in one process on the embedded default: migrate, then web + worker + scheduler."

    def add_arguments(self, parser):
        parser.add_argument("--bind", default=None, help="host:port (default TARIFA_BIND, 127.0.0.1:8000).")
        parser.add_argument("--concurrency", type=int, default=2, help="Worker slots.")
        parser.add_argument("--no-migrate", action="store_true")

    def handle(self, *args, bind, concurrency, no_migrate, **options):
        from waitress import create_server

        from tarifa.runtime.scheduler import Scheduler
        from tarifa.runtime.worker import Worker
        from tarifa.wsgi import application

        self._clear_stale_metrics()
        if not no_migrate:
            call_command("migrate", interactive=False, verbosity=0)
        self.before_serving()
        worker = Worker(queues=["default", "webhooks"], concurrency=concurrency)
        scheduler = Scheduler()
        threads = [
            threading.Thread(target=worker.run, kwargs={"install_signals": False}, name="worker"),
            threading.Thread(target=scheduler.run, kwargs={"install_signals": False}, name="scheduler"),
        ]
        for thread in threads:
            thread.start()
        host, _, port = (bind or settings.TARIFA_BIND).rpartition(":")
        server = create_server(application, host=host or "127.0.0.1", port=int(port), threads=8)
        stop = threading.Event()

        def shutdown(*_):
            if not stop.is_set():
                stop.set()
                server.close()

        signal.signal(signal.SIGTERM, shutdown)
        signal.signal(signal.SIGINT, shutdown)
        self.stdout.write(f"Tarifa is running: API http://{host}:{port}/api/docs  health http://{host}:{port}/health"
                          "  (Ctrl-C stops)")
        self.stdout.flush()
        try:
            server.run()
        except (OSError, ValueError):
            if not stop.is_set():
                raise  # a real server error, not the close() of our shutdown
        finally:
            worker.stop()
            scheduler.stop()
            for thread in threads:
                thread.join()
            self.stdout.write("Tarifa stopped.")

    @staticmethod
    def _clear_stale_metrics() -> None:
        # prometheus-client's multiprocess files must not outlive the run that wrote them; `run`
        # owns every process of its directory, so it can wipe it (web/worker share theirs).
        import glob
        import os

        for path in glob.glob(os.path.join(os.environ.get("PROMETHEUS_MULTIPROC_DIR", ""), "*.db")):
            os.remove(path)

    def before_serving(self) -> None:
        """First run on an empty database: load the demo (tenant, plan, customers, rated calls)."""
        call_command("demo", "--if-empty")
