"""Helpers for the HTTP/2 core tests: a real h2 client linked in memory, and raw frames."""

from __future__ import annotations

import os
from typing import Any

import h2.config
import h2.connection
import h2.events
from hpack import Encoder
from hyperframe.frame import Frame

from preforkd.proto.events import Data, Event
from preforkd.proto.h2 import H2Connection, H2Settings

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
DATE = b"Mon, 01 Jan 2024 00:00:00 GMT"

# Hypothesis examples per test (the suite shares two cores); raise for a deeper local run.
EXAMPLES = int(os.environ.get("PREFORKD_H2_EXAMPLES", "200"))

GET = [(":method", "GET"), (":scheme", "https"), (":path", "/"), (":authority", "example.com")]


def post(length: int | None = None, path: str = "/upload") -> list[tuple[str, str]]:
    headers = [(":method", "POST"), (":scheme", "https"), (":path", path)]
    headers.append((":authority", "example.com"))
    if length is not None:
        headers.append(("content-length", str(length)))
    return headers


class Pair:
    """A server core and a real h2 client, joined by an in-memory link."""

    def __init__(self, settings: H2Settings | None = None, *, handshake: bool = True) -> None:
        self.server = H2Connection(settings)
        self.server.date_header = DATE
        self.client = h2.connection.H2Connection(
            h2.config.H2Configuration(client_side=True, header_encoding="utf-8")
        )
        self.now = 0.0
        self.server.initiate()
        self.client.initiate_connection()
        if handshake:
            self.exchange()

    # -- moving bytes -----------------------------------------------------------------------

    def to_server(self, data: bytes | None = None) -> list[Event]:
        """Deliver the client's pending bytes (or ``data``) to the server."""
        if data is None:
            data = self.client.data_to_send()
        return self.server.receive_data(data, self.now) if data else []

    def to_client(self) -> list[h2.events.Event]:
        """Deliver the server's pending bytes to the client; return the client's events."""
        data = self.server.data_to_send()
        return self.client.receive_data(data) if data else []

    def exchange(self) -> tuple[list[Event], list[h2.events.Event]]:
        """Client to server, then server to client, until both are quiet."""
        server_events: list[Event] = []
        client_events: list[h2.events.Event] = []
        while True:
            moved = False
            data = self.client.data_to_send()
            if data:
                moved = True
                server_events += self.server.receive_data(data, self.now)
            out = self.server.data_to_send()
            if out:
                moved = True
                client_events += self.client.receive_data(out)
            if not moved:
                return server_events, client_events

    # -- requests -----------------------------------------------------------------------------

    def request(
        self,
        headers: list[tuple[str, str]] | None = None,
        body: bytes | None = None,
        *,
        end_stream: bool = True,
    ) -> int:
        """Send a request from the client (not yet delivered); return its stream id.

        With ``end_stream=False`` the request stays open for a body sent later."""
        sid = self.client.get_next_available_stream_id()
        self.client.send_headers(sid, headers or GET, end_stream=end_stream and body is None)
        if body is not None:
            self.client.send_data(sid, body, end_stream=end_stream)
        return sid

    def respond(self, sid: int, body: bytes = b"ok", status: str = "200 OK") -> None:
        self.server.send_response(sid, status, [("content-type", "text/plain")])
        self.server.send_data(sid, body, end_stream=True)


def of_type(events: list[Any], kind: type) -> list[Any]:
    return [e for e in events if isinstance(e, kind)]


def body_of(events: list[Event], sid: int) -> bytes:
    return b"".join(e.data for e in events if isinstance(e, Data) and e.stream_id == sid)


def response_body(events: list[h2.events.Event], sid: int) -> bytes:
    return b"".join(
        e.data or b""
        for e in events
        if isinstance(e, h2.events.DataReceived) and e.stream_id == sid
    )


def merge_data(events: list[Event]) -> list[Event]:
    """Join adjacent Data events of a stream: how a body is cut is not part of the contract."""
    merged: list[Event] = []
    for event in events:
        last = merged[-1] if merged else None
        if isinstance(event, Data) and isinstance(last, Data) and last.stream_id == event.stream_id:
            merged[-1] = Data(last.data + event.data, event.stream_id)
        else:
            merged.append(event)
    return merged


# -- raw frames -----------------------------------------------------------------------------


def frame(kind: int, flags: int, sid: int, payload: bytes = b"") -> bytes:
    return len(payload).to_bytes(3) + bytes((kind, flags)) + sid.to_bytes(4) + payload


def settings_payload(**values: int) -> bytes:
    codes = {
        "header_table_size": 1,
        "enable_push": 2,
        "max_concurrent_streams": 3,
        "initial_window_size": 4,
        "max_frame_size": 5,
        "max_header_list_size": 6,
    }
    return b"".join(codes[k].to_bytes(2) + v.to_bytes(4) for k, v in values.items())


class RawClient:
    """A client that writes frames by hand, for what a real client never sends."""

    def __init__(self, settings: H2Settings | None = None, *, handshake: bool = True) -> None:
        self.server = H2Connection(settings)
        self.server.date_header = DATE
        self.server.initiate()
        self.encoder = Encoder()
        self.now = 0.0
        self.received = bytearray()
        if handshake:
            self.send(PREFACE + frame(4, 0, 0))
            self.send(frame(4, 1, 0))  # acknowledge the server's SETTINGS

    def send(self, data: bytes) -> list[Event]:
        events = self.server.receive_data(data, self.now)
        self.received += self.server.data_to_send()
        return events

    def block(self, headers: list[tuple[str, str]]) -> bytes:
        return self.encoder.encode(headers)

    def headers(
        self, sid: int, headers: list[tuple[str, str]] | None = None, *, end_stream: bool = True
    ) -> bytes:
        flags = 0x4 | (0x1 if end_stream else 0)
        return frame(1, flags, sid, self.block(headers or GET))

    def frames(self) -> list[Frame]:
        """Parse (and forget) what the server has sent so far."""
        data, self.received = bytes(self.received), bytearray()
        parsed = []
        while data:
            f, length = Frame.parse_frame_header(memoryview(data[:9]))
            f.parse_body(memoryview(data[9 : 9 + length]))
            parsed.append(f)
            data = data[9 + length :]
        return parsed
