"""How workers are woken: in-process (embedded default) or RabbitMQ (TARIFA_BROKER_URL=amqp://…).

A wake carries no work: workers always claim from the database, so a lost wake only delays a
job until the next poll, and a broker outage loses nothing.
"""

from __future__ import annotations

import threading
from typing import Iterable, Protocol

from django.conf import settings

# (queue, priority) -> how many wake messages to send
Wakes = dict[tuple[str, int], int]


class Transport(Protocol):
    name: str

    def notify(self, wakes: Wakes) -> None: ...

    def wait(self, *, queues: Iterable[str], timeout: float) -> None: ...

    def check(self) -> tuple[bool, str]: ...

    def close(self) -> None: ...


_transport: Transport | None = None
_lock = threading.Lock()


def get_transport() -> Transport:
    global _transport
    with _lock:
        if _transport is None:
            if settings.TARIFA_BROKER_URL:
                from tarifa.runtime.transports.rabbitmq import RabbitMQTransport

                _transport = RabbitMQTransport(settings.TARIFA_BROKER_URL)
            else:
                from tarifa.runtime.transports.inprocess import InProcessTransport

                _transport = InProcessTransport()
        return _transport


def reset_transport() -> None:
    global _transport
    with _lock:
        if _transport is not None:
            _transport.close()
        _transport = None
