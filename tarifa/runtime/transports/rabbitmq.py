"""RabbitMQ wake-ups through aio-pika, driven from synchronous code by a private event loop thread.

Queues are durable with x-max-priority, messages persistent, publishes confirmed. The robust
connection re-opens channels and consumers after a broker restart; while the broker is away,
enqueued jobs are safe in the database and workers keep polling it.

Publishing never blocks the caller on the broker: wake-ups are merged into a pending set that one
flusher on the loop thread publishes, and keeps retrying with backoff while the connection is down
or being restored. A wake-up therefore survives a dropped connection instead of waiting for the
workers' next poll, and a broker outage costs enqueuers nothing.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from typing import Iterable

import aio_pika

from tarifa.ops.logging import get_logger

log = get_logger(__name__)

MAX_PRIORITY = 10
QUEUE_PREFIX = "tarifa."
PUBLISH_TIMEOUT = 5.0
# A wake-up only says "look at the database", so piling up more than this per queue and
# priority while the broker is away wakes nobody extra.
MAX_PENDING_WAKES = 64
RETRY_FIRST_DELAY = 0.05
RETRY_MAX_DELAY = 5.0
CLOSE_FLUSH_SECONDS = 2.0


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
        self._pending: dict[tuple[str, int], int] = {}
        self._pending_lock = threading.Lock()
        self._flushing = False
        self._closed = False
        self._flusher: asyncio.Task | None = None

    # -- sync facade -------------------------------------------------------------

    def _call(self, coro, timeout: float):
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout)

    def notify(self, wakes) -> None:
        if not wakes or self._closed:
            return
        with self._pending_lock:
            self._merge_pending(wakes)
            if self._flushing:
                return  # the running flusher picks these up
            self._flushing = True
        asyncio.run_coroutine_threadsafe(self._flush(), self._loop)

    def _merge_pending(self, wakes) -> None:
        for key, count in wakes.items():
            self._pending[key] = min(self._pending.get(key, 0) + count, MAX_PENDING_WAKES)

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
        # Give wake-ups of jobs committed just before exit a moment to leave (a CLI enqueue).
        deadline = time.monotonic() + CLOSE_FLUSH_SECONDS
        while self._flushing and time.monotonic() < deadline:
            time.sleep(0.01)
        self._closed = True
        try:
            self._call(self._shutdown(), PUBLISH_TIMEOUT)
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

    async def _shutdown(self) -> None:
        if self._flusher is not None and not self._flusher.done():
            self._flusher.cancel()  # still retrying an unreachable broker
            try:
                await self._flusher
            except asyncio.CancelledError:
                pass
        if self._connection is not None:
            await self._connection.close()

    async def _flush(self) -> None:
        self._flusher = asyncio.current_task()
        delay, failing = RETRY_FIRST_DELAY, False
        while True:
            with self._pending_lock:
                if not self._pending or self._closed:
                    self._pending.clear()
                    self._flushing = False
                    return
                wakes, self._pending = self._pending, {}
            try:
                await asyncio.wait_for(self._publish(wakes), PUBLISH_TIMEOUT)
            except Exception as exc:  # the jobs are committed; keep the wake-ups and try again
                if not failing:
                    log.warning("broker.publish_failed", error=repr(exc), retry="background")
                failing = True
                with self._pending_lock:
                    self._merge_pending(wakes)
                await asyncio.sleep(delay)
                delay = min(delay * 2, RETRY_MAX_DELAY)
                continue
            if failing:
                log.info("broker.publish_recovered")
            delay, failing = RETRY_FIRST_DELAY, False

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
