"""h2c: an HTTP/1.1 request with "Upgrade: h2c" becomes stream 1 (RFC 7540 §3.2)."""

from __future__ import annotations

import base64

import h2.config
import h2.connection
import h2.events
import pytest

from preforkd.errors import LocalProtocolError, RemoteProtocolError
from preforkd.proto.events import Data, EndOfMessage, Request
from preforkd.proto.h1 import H1Connection
from preforkd.proto.h2 import UPGRADE_RESPONSE, H2Connection

from .h2_helpers import DATE, of_type, response_body


def upgrade_request(settings: str, extra: bytes = b"", body: bytes = b"") -> list:
    method = b"POST" if body else b"GET"
    head = (
        method
        + b" /up?x=1 HTTP/1.1\r\nHost: example.com\r\nConnection: Upgrade, HTTP2-Settings\r\n"
        b"Upgrade: h2c\r\nHTTP2-Settings: " + settings.encode() + b"\r\n" + extra
    )
    if body:
        head += b"Content-Length: %d\r\n" % len(body)
    return H1Connection().receive_data(head + b"\r\n" + body)


def client() -> tuple[h2.connection.H2Connection, str]:
    conn = h2.connection.H2Connection(
        h2.config.H2Configuration(client_side=True, header_encoding="utf-8")
    )
    settings = conn.initiate_upgrade_connection()
    assert settings is not None
    return conn, settings.decode("ascii")


def test_upgrade_without_body() -> None:
    cli, settings = client()
    request = upgrade_request(settings, b"Accept: */*\r\n")[0]
    assert isinstance(request, Request) and request.upgrade == "h2c"
    server = H2Connection()
    server.date_header = DATE
    events = server.initiate_upgrade(settings, request)
    assert events == [
        Request("GET", "/up?x=1", "2", [("host", "example.com"), ("accept", "*/*")], stream_id=1),
        EndOfMessage(1),
    ]
    out = server.data_to_send()
    assert out.startswith(UPGRADE_RESPONSE)
    cli.receive_data(out[len(UPGRADE_RESPONSE) :])
    assert server.receive_data(cli.data_to_send(), 0.0) == []  # preface and SETTINGS
    server.send_response(1, "200 OK", [])
    server.send_data(1, b"upgraded", end_stream=True)
    client_events = cli.receive_data(server.data_to_send())
    assert response_body(client_events, 1) == b"upgraded"
    assert of_type(client_events, h2.events.StreamEnded)
    assert server.open_streams == 0
    # The next request is a plain HTTP/2 one.
    cli.send_headers(
        3,
        [(":method", "GET"), (":scheme", "http"), (":path", "/"), (":authority", "a")],
        end_stream=True,
    )
    events = server.receive_data(cli.data_to_send(), 0.0)
    assert [type(e) for e in events] == [Request, EndOfMessage] and events[0].stream_id == 3


def test_upgrade_with_body_read_over_http1() -> None:
    _, settings = client()
    request, *body_events = upgrade_request(settings, body=b"hello")
    assert isinstance(request, Request)
    server = H2Connection()
    events = server.initiate_upgrade(settings, request)
    assert len(events) == 1 and isinstance(events[0], Request) and events[0].has_body
    assert events[0].content_length == 5
    assert ("content-length", "5") in events[0].headers
    assert body_events == [Data(b"hello"), EndOfMessage()]
    assert server.receive_upgrade_body(b"hel") == [Data(b"hel", 1)]
    assert server.receive_upgrade_body(b"lo", end=True) == [Data(b"lo", 1), EndOfMessage(1)]
    server.acknowledge_received_data(1, 5)  # not flow-controlled: nothing to give back
    with pytest.raises(LocalProtocolError):
        server.receive_upgrade_body(b"more")


@pytest.mark.parametrize(("te", "kept"), [(b"trailers", True), (b"gzip", False)])
def test_connection_fields_of_the_upgrade_request_are_dropped(te: bytes, kept: bool) -> None:
    # RFC 9113 §8.2.2: no connection-specific fields, and TE only as "trailers".
    _, settings = client()
    request = upgrade_request(settings, b"Keep-Alive: 5\r\nTE: " + te + b"\r\n")[0]
    assert isinstance(request, Request)
    (upgraded, _) = H2Connection().initiate_upgrade(settings, request)
    assert isinstance(upgraded, Request)
    assert [n for n, _ in upgraded.headers] == (["host", "te"] if kept else ["host"])


def test_client_settings_from_the_header_apply() -> None:
    payload = (4).to_bytes(2) + (1).to_bytes(4)  # SETTINGS_INITIAL_WINDOW_SIZE = 1
    settings = base64.urlsafe_b64encode(payload).decode().rstrip("=")
    request = upgrade_request(settings)[0]
    assert isinstance(request, Request)
    server = H2Connection()
    server.initiate_upgrade(settings, request)
    server.send_response(1, "200 OK", [])
    server.send_data(1, b"abc", end_stream=True)
    server.data_to_send()
    assert server.stream_buffered(1) == 2  # a one-byte window


@pytest.mark.parametrize(
    "value",
    [
        "!!!",  # not base64url
        base64.urlsafe_b64encode(b"\x00\x04\x00").decode(),  # not a multiple of 6
        base64.urlsafe_b64encode((2).to_bytes(2) + (2).to_bytes(4)).decode(),  # ENABLE_PUSH=2
    ],
)
def test_invalid_http2_settings_is_refused_without_effect(value: str) -> None:
    _, settings = client()
    request = upgrade_request(settings)[0]
    assert isinstance(request, Request)
    server = H2Connection()
    with pytest.raises(RemoteProtocolError) as info:
        server.initiate_upgrade(value, request)
    assert info.value.status == 400
    assert server.data_to_send() == b""
    server.initiate()  # the adapter declined the upgrade; this connection may still start
    with pytest.raises(LocalProtocolError):
        server.initiate()


def test_empty_http2_settings_is_valid() -> None:
    request = upgrade_request("")[0]
    assert isinstance(request, Request)
    assert H2Connection().initiate_upgrade("", request)[0].stream_id == 1
