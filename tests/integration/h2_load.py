"""A bounded HTTP/2 load of the kind a real client produces, for zero-drop tests.

Each thread keeps one HTTP/2 connection (the ``h2`` library over a socket) with several
streams in flight, and behaves as RFC 9113 §6.8 asks of a client: after a GOAWAY it opens
no new stream on that connection, lets the streams at or below the GOAWAY's last stream id
finish, retries those above it (and those refused with REFUSED_STREAM, §8.7) on a new
connection. A failure is what a user would see: a stream the server took (at or below
the last stream id) that did not complete with 200, a stream reset with another code, a
connection closed or broken under streams it had accepted. A refused connect() is not a
failure (a stopping server sends a load balancer elsewhere that way); it is retried.

Only 127.0.0.1, bounded in time and count, stopped by the test.
"""

from __future__ import annotations

import socket
import time
from dataclasses import dataclass, field

import h2.config
import h2.connection
import h2.errors
import h2.events
import h2.exceptions

from tests.integration.bounded_load import BoundedLoad

LAST_ID = 2**31 - 1


@dataclass
class _Conn:
    sock: socket.socket
    h2: h2.connection.H2Connection
    streams: dict[int, int | None] = field(default_factory=dict)  # id -> status seen
    last_id: int | None = None  # from the newest GOAWAY


class H2Load(BoundedLoad):
    def __init__(
        self, port: int, path: str = "/", threads: int = 3, streams: int = 8,
        limit: float = 30.0, max_requests: int = 200_000,
    ) -> None:  # fmt: skip
        super().__init__(port, path, threads, limit, max_requests)
        self.streams = streams
        self.retried = 0  # refused or above a GOAWAY's last id: sent again elsewhere
        self.goaways = 0
        self.refused_connects = 0

    def __enter__(self) -> H2Load:
        super().__enter__()
        return self

    # --- one client thread ---------------------------------------------------------------

    def _client(self, index: int) -> None:
        self._run()

    def _run(self) -> None:
        pending = 0  # requests to send again (retried)
        while self._running():
            conn = self._connect()
            if conn is None:
                continue
            pending = self._serve(conn, pending)

    def _connect(self) -> _Conn | None:
        try:
            sock = socket.create_connection(("127.0.0.1", self.port), timeout=15)
        except ConnectionRefusedError:
            with self._lock:
                self.refused_connects += 1
            time.sleep(0.005)  # a stopped server: do not spin (not synchronisation)
            return None
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
        conn.initiate_connection()
        sock.sendall(conn.data_to_send())
        return _Conn(sock, conn)

    def _serve(self, conn: _Conn, pending: int) -> int:
        """Use one connection until it is done; returns the requests still to send."""
        try:
            while True:
                if conn.last_id is None and self._running():
                    while len(conn.streams) < self.streams:
                        self._open(conn)
                        pending = max(0, pending - 1)
                elif not conn.streams:
                    return pending  # GOAWAY'd (or stopping) and nothing left in flight
                conn.sock.sendall(conn.h2.data_to_send())
                data = conn.sock.recv(65536)
                if not data:
                    return pending + self._lost(conn, "connection closed")
                for event in conn.h2.receive_data(data):
                    pending += self._event(conn, event)
                conn.sock.sendall(conn.h2.data_to_send())
        except (OSError, h2.exceptions.ProtocolError) as exc:
            return pending + self._lost(conn, f"{type(exc).__name__}: {exc}")
        finally:
            conn.sock.close()

    def _open(self, conn: _Conn) -> None:
        stream_id = conn.h2.get_next_available_stream_id()
        headers = [(":method", "GET"), (":path", self.path), (":scheme", "http"),
                   (":authority", f"127.0.0.1:{self.port}")]  # fmt: skip
        conn.h2.send_headers(stream_id, headers, end_stream=True)
        conn.streams[stream_id] = None

    def _event(self, conn: _Conn, event: h2.events.Event) -> int:
        """Handle one event; returns how many requests must be sent again."""
        if isinstance(event, h2.events.ResponseReceived):
            status = dict(event.headers).get(b":status", b"?")
            conn.streams[event.stream_id] = int(status) if status.isdigit() else -1
        elif isinstance(event, h2.events.DataReceived):
            conn.h2.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
        elif isinstance(event, h2.events.StreamEnded):
            status = conn.streams.pop(event.stream_id, None)
            with self._lock:
                if status == 200:
                    self.ok += 1
                else:
                    self.failures.append(f"stream {event.stream_id}: status {status}")
        elif isinstance(event, h2.events.StreamReset):
            conn.streams.pop(event.stream_id, None)
            if event.error_code == h2.errors.ErrorCodes.REFUSED_STREAM:
                with self._lock:
                    self.retried += 1
                return 1
            with self._lock:
                self.failures.append(f"stream {event.stream_id} reset: {event.error_code!r}")
        elif isinstance(event, h2.events.ConnectionTerminated):
            return self._goaway(conn, event)
        return 0

    def _goaway(self, conn: _Conn, event: h2.events.ConnectionTerminated) -> int:
        with self._lock:
            self.goaways += 1
            if event.error_code != h2.errors.ErrorCodes.NO_ERROR:
                self.failures.append(f"GOAWAY with {event.error_code!r}")
        conn.last_id = event.last_stream_id
        above = [sid for sid in conn.streams if sid > event.last_stream_id]
        for sid in above:  # §6.8: never processed; safe to send again
            del conn.streams[sid]
        with self._lock:
            self.retried += len(above)
        return len(above)

    def _lost(self, conn: _Conn, why: str) -> int:
        """The connection ended: streams the server took are failures, others retried."""
        last = LAST_ID if conn.last_id is None else conn.last_id
        taken = [sid for sid in conn.streams if sid <= last]
        with self._lock:
            for sid in taken:
                self.failures.append(f"stream {sid} lost: {why}")
            self.retried += len(conn.streams) - len(taken)
        return len(conn.streams) - len(taken)
