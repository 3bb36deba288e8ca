"""Helpers for tests that run jobs: drain the queue synchronously, and run worker processes."""

from __future__ import annotations

import os
import subprocess
import sys
import time

from django.db import connection

from tarifa.runtime.worker import Worker


def drain(*, queues: list[str] | None = None, max_batches: int = 1000, batch_size: int = 100) -> int:
    """Run due jobs in this thread until none is due; returns how many were claimed."""
    worker = Worker(queues=queues or ["default", "webhooks"], batch_size=batch_size)
    total = 0
    for _ in range(max_batches):
        claimed = worker.run_once()
        if not claimed:
            return total
        total += claimed
    raise AssertionError("the queue did not drain")


def database_url() -> str:
    """A URL of the database the tests are using, for subprocesses to share it."""
    settings = connection.settings_dict
    if connection.vendor != "postgresql":
        raise RuntimeError("worker subprocesses need PostgreSQL")
    user = settings.get("USER") or ""
    password = f":{settings['PASSWORD']}" if settings.get("PASSWORD") else ""
    auth = f"{user}{password}@" if user else ""
    return f"postgres://{auth}{settings.get('HOST') or '127.0.0.1'}:{settings.get('PORT') or 5432}/{settings['NAME']}"


def spawn(command: list[str], *, env: dict | None = None, log_path: str | None = None) -> subprocess.Popen:
    """Start `tarifa <command>` against the test database."""
    full_env = {
        **os.environ,
        "TARIFA_DATABASE_URL": database_url(),
        "TARIFA_LOG_FORMAT": "console",
        "TARIFA_EXTRA_TASK_MODULES": "tarifa.runtime.tests.jobs_for_tests",
        **(env or {}),
    }
    output = open(log_path, "w") if log_path else subprocess.DEVNULL
    return subprocess.Popen(
        [sys.executable, "-m", "tarifa", *command], env=full_env, stdout=output, stderr=subprocess.STDOUT
    )


def run_in_threads(fn, count: int, *, timeout: float = 60) -> list:
    """Run `fn(index)` in `count` threads released together (each on its own database connection);
    returns their results in index order and re-raises the first error."""
    import threading

    barrier = threading.Barrier(count)
    results: list = [None] * count
    errors: list[BaseException] = []

    def body(index: int) -> None:
        try:
            barrier.wait(timeout)
            results[index] = fn(index)
        except BaseException as exc:  # surfaced in the calling thread
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=body, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout)
    if errors:
        raise errors[0]
    return results


def wait_until_a_session_waits_for_a_lock(*, timeout: float = 15) -> None:
    """Return once some PostgreSQL session waits for a lock (the other side of a lock-order test)."""
    deadline = time.monotonic() + timeout
    with connection.cursor() as cursor:
        while time.monotonic() < deadline:
            # Inside a transaction pg_stat_activity is read once, then cached: read it afresh.
            cursor.execute("SELECT pg_stat_clear_snapshot()")
            cursor.execute("SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'")
            if cursor.fetchone()[0]:
                return
            time.sleep(0.05)
    raise AssertionError("no session waited for a lock")


def hold_in_thread(lock, then, *, timeout: float = 30):
    """A lock-order test's holding side, on a thread and in one transaction: `lock()` takes the rows,
    then, once another session waits for a lock (the side under test, which the caller runs after
    this returns), `then()`. Returns once `lock()` ran, with a function that joins the thread and
    returns what it raised."""
    import threading

    from django.db import transaction

    holding, failures = threading.Event(), []

    def body() -> None:
        try:
            with transaction.atomic():
                lock()
                holding.set()
                wait_until_a_session_waits_for_a_lock()
                then()
        except BaseException as error:  # returned by join
            failures.append(error)
        finally:
            holding.set()
            connection.close()

    thread = threading.Thread(target=body)
    thread.start()
    if not holding.wait(timeout):
        raise AssertionError("the holding thread did not take its lock")

    def join() -> list[BaseException]:
        thread.join(timeout)
        return failures

    return join
