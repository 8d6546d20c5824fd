"""A bounded HTTP/1.1 load of the kind a real client pool produces, for zero-drop tests.

Half the threads reuse one keep-alive connection for as long as the server lets them;
the other half open a new connection per request. Every request that was *sent* and got
no complete response is a failure: that is what a user sees as "connection reset" or
"RemoteDisconnected". A connect() that is refused is not a failure of a sent request (it
is how a stopping server tells a load balancer to move on); those are counted apart.

Only 127.0.0.1, bounded in time and count, stopped by the test.
"""

from __future__ import annotations

import http.client
import socket
import threading
import time

from tests.integration.harness import wait_for


class MixedLoad:
    def __init__(
        self,
        port: int,
        path: str = "/",
        threads: int = 6,
        limit: float = 30.0,
        max_requests: int = 200_000,
    ) -> None:
        self.port = port
        self.path = path
        self.ok = 0
        self.failures: list[str] = []
        self.refused = 0
        self.bodies: set[bytes] = set()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._deadline = time.monotonic() + limit
        self._max_requests = max_requests
        self._threads = [
            threading.Thread(target=self._run, args=(i % 2 == 0,), daemon=True)
            for i in range(threads)
        ]

    def __enter__(self) -> MixedLoad:
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
            thread.join(15)

    def _running(self) -> bool:
        return (
            not self._stop.is_set()
            and time.monotonic() < self._deadline
            and self.ok + len(self.failures) < self._max_requests
        )

    def _run(self, keep_alive: bool) -> None:
        conn: http.client.HTTPConnection | None = None
        while self._running():
            if conn is None:
                conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=15)
                try:
                    conn.connect()
                except ConnectionRefusedError:
                    conn = None
                    with self._lock:
                        self.refused += 1
                    time.sleep(0.005)  # a stopped server: do not spin (not synchronisation)
                    continue
                conn.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            headers = {} if keep_alive else {"Connection": "close"}
            try:
                conn.request("GET", self.path, headers=headers)
                response = conn.getresponse()
                body = response.read()
                status = response.status
                will_close = response.will_close
            except (OSError, http.client.HTTPException) as exc:
                kind = "keep-alive" if keep_alive else "new"
                with self._lock:
                    self.failures.append(f"{type(exc).__name__} ({kind} connection): {exc}")
                conn.close()
                conn = None
                continue
            with self._lock:
                if status == 200:
                    self.ok += 1
                    self.bodies.add(body)
                else:
                    self.failures.append(f"status {status}: {body[:80]!r}")
            if will_close or not keep_alive:
                conn.close()
                conn = None
        if conn is not None:
            conn.close()

    def assert_no_failure(self) -> None:
        assert self.ok > 0, "no response at all"
        assert self.failures == [], f"{len(self.failures)} failed of {self.ok}: {self.failures[:5]}"
