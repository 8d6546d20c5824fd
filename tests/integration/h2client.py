"""A small raw HTTP/2 client on the h2 library, for frame-level integration tests."""

from __future__ import annotations

import socket
import ssl
import time
from dataclasses import dataclass, field

import h2.config
import h2.connection
import h2.events
import h2.settings


@dataclass
class Response:
    stream_id: int
    headers: dict[str, str] = field(default_factory=dict)
    body: bytearray = field(default_factory=bytearray)
    ended: bool = False
    reset: int | None = None

    @property
    def status(self) -> int:
        return int(self.headers.get(":status", "0"))


class H2Client:
    def __init__(
        self,
        port: int,
        *,
        tls: ssl.SSLContext | None = None,
        window: int | None = None,
        timeout: float = 10.0,
    ) -> None:
        raw = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        if tls is not None:
            tls.set_alpn_protocols(["h2"])
            raw = tls.wrap_socket(raw, server_hostname="127.0.0.1")
        self.sock = raw
        self.conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
        self.conn.initiate_connection()
        if window is not None:
            self.conn.update_settings({h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: window})
        self.responses: dict[int, Response] = {}
        self.events: list[h2.events.Event] = []
        self.goaway: h2.events.ConnectionTerminated | None = None
        self.closed = False
        self.auto_ack = True  # acknowledge received DATA (open windows) as we read
        self.flush()

    def flush(self) -> None:
        data = self.conn.data_to_send()
        if data:
            self.sock.sendall(data)

    def request(
        self,
        path: str,
        method: str = "GET",
        body: bytes | None = None,
        headers: list[tuple[str, str]] | None = None,
        end: bool = True,
    ) -> int:
        sid = self.conn.get_next_available_stream_id()
        fields = [
            (":method", method),
            (":path", path),
            (":scheme", "http"),
            (":authority", "127.0.0.1"),
            *(headers or []),
        ]
        self.conn.send_headers(sid, fields, end_stream=end and not body)
        self.responses[sid] = Response(sid)
        if body:
            self.send_body(sid, body, end=end)
        self.flush()
        return sid

    def send_body(self, sid: int, body: bytes, end: bool = True) -> None:
        view = memoryview(body)
        while view:
            window = min(
                self.conn.local_flow_control_window(sid), self.conn.max_outbound_frame_size
            )
            if window <= 0:
                self.receive_once()
                continue
            self.conn.send_data(sid, bytes(view[:window]))
            view = view[window:]
            self.flush()
        if end:
            self.conn.end_stream(sid)
        self.flush()

    def receive_once(self) -> bool:
        try:
            data = self.sock.recv(65536)
        except TimeoutError:
            return False
        if not data:
            self.closed = True
            return False
        for event in self.conn.receive_data(data):
            self.events.append(event)
            self._on(event)
        self.flush()
        return True

    def _on(self, event: h2.events.Event) -> None:
        sid = getattr(event, "stream_id", None)
        resp = self.responses.get(sid) if sid else None
        if isinstance(event, h2.events.ResponseReceived) and resp:
            resp.headers = {
                k.decode() if isinstance(k, bytes) else k: v.decode() if isinstance(v, bytes) else v
                for k, v in event.headers
            }
        elif isinstance(event, h2.events.DataReceived) and resp:
            resp.body += event.data
            if self.auto_ack and event.flow_controlled_length:
                self.conn.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
        elif isinstance(event, h2.events.StreamEnded) and resp:
            resp.ended = True
        elif isinstance(event, h2.events.StreamReset) and resp:
            resp.reset = event.error_code
        elif isinstance(event, h2.events.ConnectionTerminated):
            self.goaway = event

    def wait(self, condition, timeout: float = 10.0) -> None:  # type: ignore[no-untyped-def]
        deadline = time.monotonic() + timeout
        while not condition():
            if time.monotonic() > deadline:
                raise TimeoutError("condition not met")
            if not self.receive_once() and self.closed:
                if condition():
                    return
                raise ConnectionError("server closed the connection")

    def get(self, path: str, timeout: float = 10.0) -> Response:
        sid = self.request(path)
        self.wait(
            lambda: self.responses[sid].ended or self.responses[sid].reset is not None, timeout
        )
        return self.responses[sid]

    def close(self) -> None:
        try:
            self.conn.close_connection()
            self.flush()
        except OSError:
            pass
        self.sock.close()
