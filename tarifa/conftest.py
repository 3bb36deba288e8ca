"""Shared fixtures. Service-backed tests use the real PostgreSQL / RabbitMQ / Redis configured by
the environment (see the Makefile's `test` target); with TARIFA_REQUIRE_SERVICES=1 a missing
service fails the test instead of skipping it, so CI cannot pass without them."""

from __future__ import annotations

import os

import pytest
from django.conf import settings
from django.db import connection
from django.test import Client
from hypothesis import settings as hypothesis_settings

from tarifa.core import ratelimit
from tarifa.runtime.transports import reset_transport


# CI (.ci/run) draws the same examples every run, so a landing is never refused over an example
# that no one has seen; developers' runs draw new ones, and hypothesis replays any failure it
# found from .hypothesis/.
hypothesis_settings.register_profile("ci", derandomize=True, print_blob=True)
hypothesis_settings.load_profile(os.environ.get("TARIFA_HYPOTHESIS_PROFILE", "default"))


def _missing(reason: str) -> None:
    if os.environ.get("TARIFA_REQUIRE_SERVICES") == "1":
        pytest.fail(f"service-backed test could not run: {reason}")
    pytest.skip(reason)


@pytest.fixture
def postgres(db):
    if connection.vendor != "postgresql":
        _missing("needs PostgreSQL (set TARIFA_TEST_POSTGRES_URL)")
    return connection


@pytest.fixture
def broker_url():
    if not settings.TARIFA_BROKER_URL:
        _missing("needs RabbitMQ (set TARIFA_TEST_BROKER_URL)")
    return settings.TARIFA_BROKER_URL


@pytest.fixture
def redis_url():
    if not settings.TARIFA_REDIS_URL:
        _missing("needs Redis (set TARIFA_TEST_REDIS_URL)")
    return settings.TARIFA_REDIS_URL


@pytest.fixture(autouse=True)
def _fresh_process_state():
    ratelimit.reset_cache()
    ratelimit.clear()
    yield
    reset_transport()


@pytest.fixture
def tenant_and_key(db):
    from tarifa.tenants.services import create_tenant

    tenant, issued = create_tenant(name="Acme Telecom")
    return tenant, issued.raw_key


@pytest.fixture
def tenant(tenant_and_key):
    return tenant_and_key[0]


class ApiClient:
    """A test client that sends the API key and JSON bodies."""

    def __init__(self, key: str, header: str = "Authorization"):
        self.client = Client()
        value = f"Bearer {key}" if header == "Authorization" else key
        self.headers = {header: value}

    def _call(self, method: str, path: str, body=None, **params):
        kwargs = {"headers": self.headers}
        if body is not None:
            kwargs.update(data=body, content_type="application/json")
        elif params:
            kwargs["data"] = params
        return getattr(self.client, method)(path, **kwargs)

    def get(self, path, **params):
        return self._call("get", path, **params)

    def post(self, path, body=None):
        return self._call("post", path, body if body is not None else {})

    def patch(self, path, body):
        return self._call("patch", path, body)

    def put(self, path, body):
        return self._call("put", path, body)

    def delete(self, path):
        return self._call("delete", path)


@pytest.fixture
def api(tenant_and_key):
    return ApiClient(tenant_and_key[1])


@pytest.fixture
def operator(db):
    """A test client logged in to the admin as a superuser."""
    from django.contrib.auth.models import User

    client = Client()
    client.force_login(User.objects.create_superuser("ana", "ana@example.com", "pw"))
    return client


@pytest.fixture
def make_api(db):
    def factory(name: str):
        from tarifa.tenants.services import create_tenant

        tenant, issued = create_tenant(name=name)
        return tenant, ApiClient(issued.raw_key)

    return factory


class Receiver:
    """A local HTTP server on 127.0.0.1 that records requests and answers with a chosen status."""

    def __init__(self):
        import http.server
        import threading

        self.requests: list[dict] = []
        self.statuses: list[int] = []  # answered in order; 200 once exhausted
        receiver = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                receiver.requests.append({"path": self.path, "headers": dict(self.headers), "body": body})
                status = receiver.statuses.pop(0) if receiver.statuses else 200
                self.send_response(status)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver(settings):
    settings.TARIFA_PRIVATE_URLS = True  # it listens on 127.0.0.1
    server = Receiver()
    yield server
    server.close()
