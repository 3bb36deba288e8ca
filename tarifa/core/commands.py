"""Shared pieces of Tarifa's management commands: error mapping and plain-text tables."""

from __future__ import annotations

from django.core.management.base import BaseCommand, CommandError
from django.db import InterfaceError, OperationalError

from tarifa.core.errors import DomainError


DATABASE_ERROR_EXIT = 3


class TarifaCommand(BaseCommand):
    """A command whose expected failures end as one line on stderr and exit code 2, as argparse's
    usage errors do: 1 stays free for a command's own finding (reconcile's differences), so a
    script can tell "the books differ" from "you mistyped the tenant". A database that cannot be
    reached or fails mid-way is one line too, with exit code 3, which a scheduler may retry."""

    # Data commands skip Django's system checks, which import the whole URL tree and admin (0.23 s
    # of each run: cron'd flushes, imports); the servers (ServerCommand) check the project at start.
    requires_system_checks = []

    def execute(self, *args, **options):
        try:
            return super().execute(*args, **options)
        except DomainError as exc:
            raise CommandError(f"{exc.code}: {exc.message}", returncode=2) from exc
        except (OperationalError, InterfaceError) as exc:
            reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            raise CommandError(f"database_error: {reason}", returncode=DATABASE_ERROR_EXIT) from exc

    def table(self, headers: list[str], rows: list[list]) -> None:
        cells = [[str(c) for c in row] for row in rows]
        widths = [max([len(h), *(len(r[i]) for r in cells)]) for i, h in enumerate(headers)]
        line = "  ".join(h.ljust(w) for h, w in zip(headers, widths))
        self.stdout.write(line)
        self.stdout.write("  ".join("-" * w for w in widths))
        for row in cells:
            self.stdout.write("  ".join(c.rjust(w) if c.replace(".", "").isdigit() else c.ljust(w)
                                        for c, w in zip(row, widths)))


class ServerCommand(TarifaCommand):
    """A long-running process (web, worker, scheduler, run): Django's system checks run at its start."""

    requires_system_checks = "__all__"
