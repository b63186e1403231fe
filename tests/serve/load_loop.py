"""A background load of explain requests for the scaling and failover tests."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import requests


class Load:
    """``clients`` threads sending ``/v1/explain`` until stopped or ``limit`` requests are sent;
    records every status code (``-1`` for a connection error)."""

    def __init__(self, url: str, clients: int, limit: int | None = None) -> None:
        self.url, self.clients, self.limit = url, clients, limit
        self.codes: list[int] = []
        self._sent = 0
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._pool = ThreadPoolExecutor(clients)

    def __enter__(self) -> Load:
        for client in range(self.clients):
            self._pool.submit(self._client, client)
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        self._stop.set()
        self._pool.shutdown(wait=True)

    def _next(self) -> bool:
        """Reserve the next request (under the lock: ``limit`` is exact with many clients)."""
        with self._lock:
            if self._stop.is_set() or (self.limit is not None and self._sent >= self.limit):
                return False
            self._sent += 1
            return True

    def _client(self, client: int) -> None:
        session = requests.Session()
        n = 0
        while self._next():
            body = {"user_id": (client + n) % 6, "item_id": (3 * n + client) % 20}
            try:
                code = session.post(f"{self.url}/v1/explain", json=body, timeout=60).status_code
            except requests.RequestException:
                code = -1
            with self._lock:
                self.codes.append(code)
            n += 1

    @property
    def failed(self) -> int:
        return sum(code != 200 for code in self.codes)
