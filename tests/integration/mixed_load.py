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
import time

from tests.integration.bounded_load import BoundedLoad


class MixedLoad(BoundedLoad):
    def __init__(
        self,
        port: int,
        path: str = "/",
        threads: int = 6,
        limit: float = 30.0,
        max_requests: int = 200_000,
    ) -> None:
        super().__init__(port, path, threads, limit, max_requests)
        self.refused = 0
        self.bodies: set[bytes] = set()

    def __enter__(self) -> MixedLoad:
        super().__enter__()
        return self

    def _client(self, index: int) -> None:
        self._run(keep_alive=index % 2 == 0)  # half reuse connections, half do not

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
