"""What the client loads of the zero-drop tests share: threads that send requests until
stopped, a time limit or a request count, counting answers and failures.

Only 127.0.0.1, bounded in time and count, stopped by the test.
"""

from __future__ import annotations

import threading
import time

from tests.integration.harness import wait_for


class BoundedLoad:
    """Runs ``_client(index)`` on ``threads`` threads; subclasses send the requests."""

    def __init__(self, port: int, path: str, threads: int, limit: float, max_requests: int) -> None:
        self.port = port
        self.path = path
        self.ok = 0
        self.failures: list[str] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._deadline = time.monotonic() + limit
        self._max_requests = max_requests
        self._threads = [
            threading.Thread(target=self._client, args=(i,), daemon=True) for i in range(threads)
        ]

    def __enter__(self) -> BoundedLoad:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def count(self) -> int:
        with self._lock:
            return self.ok

    def wait_more(self, n: int = 200, timeout: float = 20.0) -> None:
        target = self.count + n
        wait_for(lambda: self.count >= target, timeout, f"{n} more responses")

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(20)

    def assert_no_failure(self) -> None:
        assert self.ok > 0, "no response at all"
        assert self.failures == [], f"{len(self.failures)} failed of {self.ok}: {self.failures[:5]}"

    def _running(self) -> bool:
        return (
            not self._stop.is_set()
            and time.monotonic() < self._deadline
            and self.ok + len(self.failures) < self._max_requests
        )

    def _client(self, index: int) -> None:
        raise NotImplementedError
