"""RabbitMQ wake-ups through aio-pika, driven from synchronous code by a private event loop thread.

Queues are durable with x-max-priority, messages persistent, publishes confirmed. The robust
connection re-opens channels and consumers after a broker restart; while the broker is away,
enqueued jobs are safe in the database and workers keep polling it.
"""

from __future__ import annotations

import asyncio
import json
import threading
from typing import Iterable

import aio_pika

from tarifa.ops.logging import get_logger

log = get_logger(__name__)

MAX_PRIORITY = 10
QUEUE_PREFIX = "tarifa."
PUBLISH_TIMEOUT = 5.0


class RabbitMQTransport:
    name = "rabbitmq"

    def __init__(self, url: str, *, prefetch: int = 16) -> None:
        self.url = url
        self.prefetch = prefetch
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="tarifa-amqp", daemon=True)
        self._thread.start()
        self._connection: aio_pika.abc.AbstractRobustConnection | None = None
        self._publisher: aio_pika.abc.AbstractChannel | None = None
        self._declared: set[str] = set()
        self._consuming: set[str] = set()
        self._wake = threading.Event()
        self._connect_lock = asyncio.Lock()

    # -- sync facade -------------------------------------------------------------

    def _call(self, coro, timeout: float):
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout)

    def notify(self, wakes) -> None:
        if not wakes:
            return
        try:
            self._call(self._publish(wakes), PUBLISH_TIMEOUT)
        except Exception as exc:  # the jobs are committed; workers will find them by polling
            log.warning("broker.publish_failed", error=repr(exc))

    def wait(self, *, queues: Iterable[str], timeout: float) -> None:
        missing = set(queues) - self._consuming
        if missing:
            try:
                self._call(self._consume(missing), PUBLISH_TIMEOUT)
            except Exception as exc:
                log.warning("broker.consume_failed", error=repr(exc))
        self._wake.wait(timeout)
        self._wake.clear()

    def check(self) -> tuple[bool, str]:
        try:
            self._call(self._ensure_connection(), PUBLISH_TIMEOUT)
            connected = self._connection is not None and not self._connection.is_closed
            return (True, "rabbitmq connected") if connected else (False, "rabbitmq connection closed")
        except Exception as exc:
            return False, f"rabbitmq unreachable: {exc!r}"

    def close(self) -> None:
        try:
            if self._connection is not None:
                self._call(self._connection.close(), PUBLISH_TIMEOUT)
        except Exception:
            pass
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._wake.set()

    # -- async side --------------------------------------------------------------

    async def _ensure_connection(self) -> aio_pika.abc.AbstractRobustConnection:
        async with self._connect_lock:
            if self._connection is None:
                self._connection = await aio_pika.connect_robust(self.url, timeout=PUBLISH_TIMEOUT)
                self._publisher = await self._connection.channel(publisher_confirms=True)
            return self._connection

    async def _declare(self, channel, queue: str):
        return await channel.declare_queue(
            QUEUE_PREFIX + queue, durable=True, arguments={"x-max-priority": MAX_PRIORITY}
        )

    async def _publish(self, wakes) -> None:
        await self._ensure_connection()
        for (queue, priority), count in wakes.items():
            if queue not in self._declared:
                await self._declare(self._publisher, queue)
                self._declared.add(queue)
            body = json.dumps({"queue": queue, "priority": priority}).encode()
            for _ in range(count):
                await self._publisher.default_exchange.publish(
                    aio_pika.Message(
                        body, delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
                        priority=max(0, min(MAX_PRIORITY, priority)), content_type="application/json",
                    ),
                    routing_key=QUEUE_PREFIX + queue,
                )

    async def _consume(self, queues: set[str]) -> None:
        connection = await self._ensure_connection()
        channel = await connection.channel()
        await channel.set_qos(prefetch_count=self.prefetch)
        for queue in sorted(queues):
            declared = await self._declare(channel, queue)
            await declared.consume(self._on_message)
            self._consuming.add(queue)

    async def _on_message(self, message: aio_pika.abc.AbstractIncomingMessage) -> None:
        # Acknowledge at once: the message only says "look at the database".
        async with message.process():
            self._wake.set()
