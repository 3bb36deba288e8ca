from __future__ import annotations

import threading
from typing import Iterable


class InProcessTransport:
    """Wakes worker threads of this process; other processes find work by polling the database."""

    name = "in-process"

    def __init__(self) -> None:
        self._event = threading.Event()

    def notify(self, wakes) -> None:
        if wakes:
            self._event.set()

    def wait(self, *, queues: Iterable[str], timeout: float) -> None:
        self._event.wait(timeout)
        self._event.clear()

    def check(self) -> tuple[bool, str]:
        return True, "in-process"

    def close(self) -> None:
        self._event.set()
