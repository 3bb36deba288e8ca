from __future__ import annotations

from django.conf import settings

from tarifa.core.commands import ServerCommand


class Command(ServerCommand):
    help = "Serve the API and admin with gunicorn (production web server)."

    def add_arguments(self, parser):
        parser.add_argument("--bind", default=None, help="host:port (default TARIFA_BIND, 127.0.0.1:8000).")
        parser.add_argument("--workers", type=int, default=2, help="gunicorn worker processes.")
        parser.add_argument("--threads", type=int, default=4, help="Threads per worker process.")

    def handle(self, *args, bind, workers, threads, **options):
        from gunicorn.app.base import BaseApplication
        from prometheus_client import multiprocess

        from tarifa.ops.metrics import archive_process_metrics
        from tarifa.wsgi import application

        def child_exit(server, worker):
            multiprocess.mark_process_dead(worker.pid)
            archive_process_metrics(worker.pid)

        class Server(BaseApplication):
            def load_config(self):
                self.cfg.set("bind", bind or settings.TARIFA_BIND)
                self.cfg.set("workers", workers)
                self.cfg.set("threads", threads)
                self.cfg.set("worker_class", "gthread" if threads > 1 else "sync")
                self.cfg.set("accesslog", None)
                self.cfg.set("child_exit", child_exit)

            def load(self):
                return application

        Server().run()
