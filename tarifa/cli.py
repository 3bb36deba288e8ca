"""The `tarifa` command: a thin front over Tarifa's Django management commands."""

from __future__ import annotations

import atexit
import os
import sys

SERVER_COMMANDS = {"run", "web", "worker", "scheduler"}
# Besides the servers, the commands that ingest or fold usage write their counts where the web
# process's /metrics adds them up (tarifa_usage_records_total, tarifa_usage_folded_total).
METRICS_COMMANDS = SERVER_COMMANDS | {"usage", "revenue", "billing"}


def _prepare_metrics_dir() -> None:
    # prometheus-client picks its multiprocess mode at import time, so this precedes Django.
    from tarifa import settings_env

    os.environ.setdefault("PROMETHEUS_MULTIPROC_DIR", settings_env.metrics_dir())
    os.makedirs(os.environ["PROMETHEUS_MULTIPROC_DIR"], exist_ok=True)
    atexit.register(_archive_metrics)


def _archive_metrics() -> None:
    from tarifa.ops.metrics import archive_process_metrics

    archive_process_metrics()


def _print_help() -> None:
    import django
    from django.core.management import get_commands, load_command_class

    django.setup()
    print("usage: tarifa COMMAND [options]   (tarifa COMMAND --help for a command's options)\n")
    print("Tarifa commands:")
    ours = sorted((name, app) for name, app in get_commands().items() if app.startswith("tarifa."))
    for name, app in ours:
        help_text = (load_command_class(app, name).help or "").strip().splitlines()[0:1]
        print(f"  {name:<14} {help_text[0] if help_text else ''}")
    print("\nDjango's own commands work too, e.g.: migrate, createsuperuser, shell, dbshell, showmigrations.")


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tarifa.settings")
    if argv and argv[0] in METRICS_COMMANDS:
        _prepare_metrics_dir()
    if not argv or argv[0] in ("-h", "--help", "help"):
        _print_help()
        return 0
    from django.core.management import execute_from_command_line

    execute_from_command_line(["tarifa", *argv])
    return 0


if __name__ == "__main__":
    sys.exit(main())
