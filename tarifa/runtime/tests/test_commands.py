"""The server commands as a user runs them: `tarifa run` on a fresh SQLite file, and `tarifa web`
(gunicorn) + `tarifa worker` as separate processes; both stop cleanly on a signal."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time

import httpx
import pytest


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _env(tmp_path) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TARIFA_")}
    env.update(TARIFA_VAR_DIR=str(tmp_path / "var"), TARIFA_LOG_FORMAT="console",
               TARIFA_WORKER_POLL_SECONDS="0.2", TARIFA_HEARTBEAT_SECONDS="0.5")
    return env


def _tarifa(args, env, **kwargs):
    return subprocess.run([sys.executable, "-m", "tarifa", *args], env=env, capture_output=True, text=True,
                          timeout=120, **kwargs)


def _wait_healthy(url: str, process: subprocess.Popen, timeout: float = 60) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert process.poll() is None, "server exited early"
        try:
            response = httpx.get(url, timeout=2)
            if response.status_code == 200:
                return response.json()
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise AssertionError("server never became healthy")


def test_help_lists_every_command():
    result = subprocess.run([sys.executable, "-m", "tarifa", "--help"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0
    for command in ("run", "web", "worker", "scheduler", "jobs", "tenant"):
        assert f"\n  {command} " in result.stdout


def test_tarifa_run_serves_runs_jobs_and_stops_on_ctrl_c(tmp_path):
    env = _env(tmp_path)
    port = _free_port()
    process = subprocess.Popen([sys.executable, "-m", "tarifa", "run", "--bind", f"127.0.0.1:{port}"], env=env,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        health = _wait_healthy(f"http://127.0.0.1:{port}/health", process)
        assert health["checks"]["database"]["detail"] == "sqlite"
        created = _tarifa(["tenant", "create", "Run Test"], env)
        key = created.stdout.strip().splitlines()[-1].split()[-1]
        response = httpx.post(f"http://127.0.0.1:{port}/api/v1/customers", json={"external_id": "c1"},
                              headers={"Authorization": f"Bearer {key}"})
        assert response.status_code == 201
        smoke = _tarifa(["jobs", "smoke", "--count", "20", "--timeout", "30"], env)
        assert smoke.returncode == 0, smoke.stdout + smoke.stderr
        assert (tmp_path / "var" / "tarifa.sqlite3").exists() and (tmp_path / "var" / "secret_key").exists()
    finally:
        process.send_signal(signal.SIGINT)
        output, _ = process.communicate(timeout=30)
    assert process.returncode == 0, output
    assert "Tarifa stopped." in output


def test_web_and_worker_processes_with_metrics_from_both(tmp_path):
    env = _env(tmp_path)
    assert _tarifa(["migrate", "-v0"], env).returncode == 0
    port = _free_port()
    web = subprocess.Popen([sys.executable, "-m", "tarifa", "web", "--bind", f"127.0.0.1:{port}", "--workers", "2"],
                           env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    worker = subprocess.Popen([sys.executable, "-m", "tarifa", "worker", "--concurrency", "2"], env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        _wait_healthy(f"http://127.0.0.1:{port}/health", web)
        smoke = _tarifa(["jobs", "smoke", "--count", "30", "--timeout", "30"], env)
        assert smoke.returncode == 0, smoke.stdout + smoke.stderr
        metrics = httpx.get(f"http://127.0.0.1:{port}/metrics").text
        # Counted in the worker process, served by a gunicorn process: multiprocess aggregation.
        assert 'tarifa_jobs_total{outcome="succeeded",type="runtime.sample_tally"} 30.0' in metrics
    finally:
        for process in (web, worker):
            process.send_signal(signal.SIGTERM)
        for process in (web, worker):
            process.wait(30)
    assert worker.returncode == 0 and web.returncode == 0
    # The stopped processes' counts live on in the archive, without their files.
    assert _process_files(tmp_path) == []
    text = _scraped_metrics(tmp_path)
    assert 'tarifa_jobs_total{outcome="succeeded",type="runtime.sample_tally"} 30.0' in text
    assert 'tarifa_job_duration_seconds_count{type="runtime.sample_tally"} 30.0' in text


@pytest.mark.parametrize("args,message", [
    (["tenant", "create", "X", "--timezone", "Nowhere/Else"], "invalid_timezone"),
    (["tenant", "create", "X", "--currency", "EURO"], "invalid_currency"),  # the column holds 3 letters
    (["tenant", "revoke-key", "trf_nope"], "api_key_not_found"),
])
def test_cli_errors_are_one_line_and_nonzero(tmp_path, args, message):
    env = _env(tmp_path)
    _tarifa(["migrate", "-v0"], env)
    result = _tarifa(args, env)
    assert result.returncode != 0
    assert message in result.stderr and len(result.stderr.strip().splitlines()) == 1


def test_an_unreachable_database_is_one_line_and_exit_3(tmp_path):
    """It had been a traceback; 3 tells a scheduler the run is worth retrying."""
    env = _env(tmp_path)
    env["TARIFA_DATABASE_URL"] = f"postgres://postgres@127.0.0.1:{_free_port()}/nothing"
    result = _tarifa(["billing", "reconcile"], env)
    assert result.returncode == 3
    assert result.stderr.startswith("CommandError: database_error: connection failed")
    assert len(result.stderr.strip().splitlines()) == 1


def test_an_import_by_the_command_is_counted_where_the_web_process_reads_metrics(tmp_path):
    """`tarifa usage import` runs in its own process: its counts go to the shared metrics folder
    that /metrics of `tarifa web` adds up."""
    env = _env(tmp_path)
    assert _tarifa(["migrate", "-v0"], env).returncode == 0
    assert _tarifa(["tenant", "create", "Acme", "--slug", "acme"], env).returncode == 0
    usage = tmp_path / "usage.jsonl"
    usage.write_text('{"id": "r1", "customer": "c1", "kind": "call", "quantity": 60, '
                     '"occurred_at": "2025-12-01T10:00:00Z"}\n{broken\n')
    result = _tarifa(["usage", "import", str(usage), "--tenant", "acme", "--format", "jsonl", "--no-progress"], env)
    assert result.returncode == 1 and "accepted=1" in result.stdout, result.stdout + result.stderr
    again = _tarifa(["usage", "import", str(usage), "--tenant", "acme", "--format", "jsonl", "--no-progress"], env)
    assert again.returncode == 1 and "duplicate=1" in again.stdout, again.stdout + again.stderr
    text = _scraped_metrics(tmp_path)
    assert 'tarifa_usage_records_total{outcome="accepted"} 1.0' in text
    assert 'tarifa_usage_records_total{outcome="duplicate"} 1.0' in text
    assert 'tarifa_usage_records_total{outcome="rejected"} 2.0' in text
    # Each finished command added its counts to the archive and left no file of its own.
    assert _process_files(tmp_path) == []


def _scraped_metrics(tmp_path) -> str:
    """What /metrics would show of the metrics folder's files (live processes' and the archive)."""
    from prometheus_client import CollectorRegistry, generate_latest
    from prometheus_client.multiprocess import MultiProcessCollector

    registry = CollectorRegistry()
    MultiProcessCollector(registry, path=str(tmp_path / "var" / "metrics"))
    return generate_latest(registry).decode()


def _process_files(tmp_path) -> list[str]:
    """The metrics folder's per-process files (archive files aside)."""
    return sorted(p.name for p in (tmp_path / "var" / "metrics").glob("*.db") if "archive" not in p.name)


@pytest.fixture
def failing_system_check():
    """A Django system check that always reports an error, for the duration of a test."""
    from django.core import checks

    def always_fails(app_configs=None, **kwargs):
        return [checks.Error("broken on purpose", id="tests.E001")]

    checks.register(always_fails)
    yield
    checks.registry.registry.registered_checks.discard(always_fails)


@pytest.mark.django_db
def test_servers_run_the_system_checks_and_data_commands_skip_them(failing_system_check, capsys):
    from django.core.management import execute_from_command_line as tarifa  # what `tarifa COMMAND` runs

    # A data command (as cron runs a flush) starts without the checks' import of every URL and admin.
    tarifa(["tarifa", "revenue", "flush-batches", "--stats"])
    assert "records waiting" in capsys.readouterr().out.lower()
    # A server refuses to start on a project that fails them (the check stops it before it serves).
    with pytest.raises(SystemExit) as stopped:
        tarifa(["tarifa", "scheduler"])
    assert stopped.value.code == 1
    assert "broken on purpose" in capsys.readouterr().err
