"""A fake PagSeguro on 127.0.0.1 for tests and benchmarks: serves the documented XML (ISO-8859-1)
and can answer slowly, with 5xx, 401, 429, 400 or malformed XML."""

from __future__ import annotations

import asyncio
import threading
from urllib.parse import parse_qs, urlparse
from xml.sax.saxutils import escape


class FakePagSeguro:
    def __init__(self, *, email: str = "shop@example.com", token: str = "TOKEN", delay: float = 0.0):
        self.email, self.token, self.delay = email, token, delay
        self.transactions: dict[str, list[dict]] = {}  # reference -> transactions
        self.notifications: dict[str, dict] = {}  # notification code -> transaction
        self.failures: list = []  # next answers: 500, 401, 429, 400, "malformed", "slow:<seconds>"
        self.requests: list[str] = []
        self.lock = threading.Lock()
        self._loop = asyncio.new_event_loop()
        ready = threading.Event()
        self.url = ""

        async def start():
            # asyncio rather than http.server: the fake must not be what a benchmark measures
            # (http.server spends ~1 ms of CPU per request parsing headers).
            self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0, backlog=1024)
            self.url = f"http://127.0.0.1:{self._server.sockets[0].getsockname()[1]}"
            ready.set()

        def run():
            self._loop.run_until_complete(start())
            self._loop.run_forever()

        self.thread = threading.Thread(target=run, daemon=True)
        self.thread.start()
        ready.wait(10)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:  # HTTP/1.1 keep-alive: requests one after another on the connection
                head = await reader.readuntil(b"\r\n\r\n")
                method, path = head.split(b"\r\n", 1)[0].decode("latin-1").split(" ")[:2]
                status, body, pause = self.answer(path) if method == "GET" else (405, "Method Not Allowed", 0.0)
                if pause:
                    await asyncio.sleep(pause)
                data = body.encode("iso-8859-1", errors="replace") if isinstance(body, str) else body
                writer.write(f"HTTP/1.1 {status} {REASONS.get(status, 'Status')}\r\n"
                             f"Content-Type: application/xml;charset=ISO-8859-1\r\n"
                             f"Content-Length: {len(data)}\r\n\r\n".encode("latin-1") + data)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.LimitOverrunError, asyncio.CancelledError):
            pass
        finally:
            writer.close()

    def close(self) -> None:
        async def stop():
            self._server.close()
            tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

        asyncio.run_coroutine_threadsafe(stop(), self._loop).result(5)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self.thread.join(5)
        self._loop.close()

    # --- what the fake knows ---------------------------------------------------------

    def add(self, reference: str, *, code: str, status: int, gross: str = "100.00", fee: str = "3.99",
            method: int = 11, notification: str | None = None) -> dict:
        tx = {"code": code, "reference": reference, "status": status, "gross": gross, "fee": fee, "method": method}
        with self.lock:
            existing = [t for t in self.transactions.setdefault(reference, []) if t["code"] != code]
            self.transactions[reference] = existing + [tx]
            if notification:
                self.notifications[notification] = tx
        return tx

    def fail_next(self, *answers) -> None:
        with self.lock:
            self.failures.extend(answers)

    # --- HTTP ------------------------------------------------------------------------

    def answer(self, raw_path: str) -> tuple[int, str | bytes, float]:
        """(status, body, seconds to wait before answering) for a GET of `raw_path`."""
        status, body = self._answer(raw_path)
        return status, body, self.delay + self._pause

    def _answer(self, raw_path: str) -> tuple[int, str | bytes]:
        url = urlparse(raw_path)
        query = {k: v[0] for k, v in parse_qs(url.query).items()}
        self._pause = 0.0
        with self.lock:
            self.requests.append(raw_path)
            failure = self.failures.pop(0) if self.failures else None
        if isinstance(failure, str) and failure.startswith("slow:"):
            self._pause = float(failure[5:])
            failure = None
        if failure == 401 or query.get("email") != self.email or query.get("token") != self.token:
            return 401, "Unauthorized"
        if failure == "malformed":
            return 200, "<?xml version='1.0' encoding='ISO-8859-1'?><transactionSearchResult><transactions>"
        if failure == 400:
            return 400, _doc("<errors><error><code>13005</code><message>initialDate must be lower than allowed "
                             "limit.</message></error></errors>")
        if isinstance(failure, int):
            return failure, "error"
        if url.path in ("/v2/transactions", "/v3/transactions"):
            with self.lock:
                found = list(self.transactions.get(query.get("reference", ""), []))
            items = "".join(_transaction(t, search=True) for t in found)
            return 200, _doc(f"<transactionSearchResult><date>2025-12-01T10:00:00.000-03:00</date>"
                             f"<currentPage>1</currentPage><resultsInThisPage>{len(found)}</resultsInThisPage>"
                             f"<totalPages>1</totalPages><transactions>{items}</transactions></transactionSearchResult>")
        for prefix in ("/v3/transactions/notifications/", "/v3/transactions/"):
            if url.path.startswith(prefix):
                key = url.path[len(prefix):]
                with self.lock:
                    tx = (self.notifications.get(key) if "notifications" in prefix else
                          next((t for ts in self.transactions.values() for t in ts if t["code"] == key), None))
                if tx is None:
                    return 404, "Not Found"
                return 200, _doc(_transaction(tx, search=False))
        return 404, "Not Found"


REASONS = {200: "OK", 400: "Bad Request", 401: "Unauthorized", 404: "Not Found", 405: "Method Not Allowed",
           429: "Too Many Requests", 500: "Internal Server Error", 503: "Service Unavailable"}


def _doc(body: str) -> str:
    return f'<?xml version="1.0" encoding="ISO-8859-1" standalone="yes"?>{body}'


def _transaction(tx: dict, *, search: bool) -> str:
    fee = (f"<feeAmount>{tx['fee']}</feeAmount>" if search else
           f"<creditorFees><intermediationFeeAmount>{tx['fee']}</intermediationFeeAmount></creditorFees>")
    net = f"{float(tx['gross']) - float(tx['fee']):.2f}"
    sender = "" if search else "<sender><name>José Conceição</name><email>jose@example.com</email></sender>"
    return (f"<transaction><date>2025-12-02T17:39:14.000-03:00</date>"
            f"<lastEventDate>2025-12-02T17:40:00.000-03:00</lastEventDate><code>{escape(tx['code'])}</code>"
            f"<reference>{escape(tx['reference'])}</reference><type>1</type><status>{tx['status']}</status>"
            f"<paymentMethod><type>{tx['method']}</type></paymentMethod><grossAmount>{tx['gross']}</grossAmount>"
            f"<discountAmount>0.00</discountAmount>{fee}<netAmount>{net}</netAmount><extraAmount>0.00</extraAmount>"
            f"{sender}</transaction>")
