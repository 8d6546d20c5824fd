"""Responses: header rules of RFC 9113 §8.2 and §8.3.2, Content-Length and bodiless statuses."""

from __future__ import annotations

import h2.events
import pytest

from preforkd.errors import LocalProtocolError
from preforkd.proto.h2 import ErrorCodes

from .h2_helpers import DATE, GET, Pair, of_type, response_body


def respond(
    status: str, headers: list[tuple[str, str]], body: bytes = b"", method: str = "GET"
) -> tuple[Pair, list[h2.events.Event], int]:
    pair = Pair()
    sid = pair.request([(":method", method), *GET[1:]])
    pair.exchange()
    pair.server.send_response(sid, status, headers)
    pair.server.send_data(sid, body, end_stream=True)
    _, events = pair.exchange()
    return pair, events, sid


def head_fields(events: list[h2.events.Event]) -> list[tuple[str, str]]:
    (response,) = of_type(events, h2.events.ResponseReceived)
    return list(response.headers)


def test_status_names_date_and_server() -> None:
    _, events, sid = respond("404 Not Found", [("Content-Type", "text/plain"), ("X-A", "1")], b"no")
    assert head_fields(events) == [
        (":status", "404"),
        ("content-type", "text/plain"),
        ("x-a", "1"),
        ("date", DATE.decode()),
        ("server", "preforkd"),
    ]
    assert response_body(events, sid) == b"no"
    assert of_type(events, h2.events.StreamEnded)


def test_app_date_and_server_are_kept() -> None:
    _, events, _ = respond("200 OK", [("Date", "x"), ("Server", "app")])
    fields = head_fields(events)
    assert ("date", "x") in fields and ("server", "app") in fields
    assert [n for n, _ in fields].count("date") == 1


@pytest.mark.parametrize(
    "name", ["Connection", "Keep-Alive", "Proxy-Connection", "Transfer-Encoding", "Upgrade"]
)
def test_connection_specific_fields_are_dropped(name: str) -> None:
    _, events, _ = respond("200 OK", [(name, "x"), ("X-Kept", "1")])
    names = [n for n, _ in head_fields(events)]
    assert name.lower() not in names and "x-kept" in names


def test_te_only_trailers() -> None:
    _, events, _ = respond("200 OK", [("TE", "gzip")])
    assert "te" not in dict(head_fields(events))
    _, events, _ = respond("200 OK", [("TE", "trailers")])
    assert dict(head_fields(events))["te"] == "trailers"


def test_values_trimmed() -> None:
    _, events, _ = respond("200 OK", [("X-A", "  v  ")])
    assert dict(head_fields(events))["x-a"] == "v"


def test_latin1_values_sent_as_latin1() -> None:
    pair = Pair()
    pair.client.config.header_encoding = "latin-1"
    sid = pair.request()
    pair.exchange()
    pair.server.send_response(sid, "200 OK", [("X-N", "caf\xe9")], end_stream=True)
    _, events = pair.exchange()
    assert dict(head_fields(events))["x-n"] == "caf\xe9"


def test_content_length_is_honoured() -> None:
    _, events, sid = respond("200 OK", [("Content-Length", "5")], b"hello")
    assert dict(head_fields(events))["content-length"] == "5"
    assert response_body(events, sid) == b"hello"


def test_more_than_content_length_is_truncated() -> None:
    # RFC 9113 §8.1.1: never send more than declared.
    _, events, sid = respond("200 OK", [("Content-Length", "3")], b"hello")
    assert response_body(events, sid) == b"hel"
    assert of_type(events, h2.events.StreamEnded)


def test_less_than_content_length_resets_the_stream() -> None:
    pair, events, sid = respond("200 OK", [("Content-Length", "10")], b"hello")
    assert response_body(events, sid) == b"hello"
    assert not of_type(events, h2.events.StreamEnded)
    (reset,) = of_type(events, h2.events.StreamReset)
    assert reset.error_code == ErrorCodes.INTERNAL_ERROR
    assert pair.server.open_streams == 0


def test_empty_body_with_content_length_resets_at_once() -> None:
    pair = Pair()
    sid = pair.request()
    pair.exchange()
    pair.server.send_response(sid, "200 OK", [("Content-Length", "2")], end_stream=True)
    _, events = pair.exchange()
    assert of_type(events, h2.events.StreamReset)
    assert pair.server.open_streams == 0


@pytest.mark.parametrize(
    ("status", "method", "length_kept"),
    [("204 No Content", "GET", False), ("304 Not Modified", "GET", True), ("200 OK", "HEAD", True)],
)
def test_no_body_statuses(status: str, method: str, length_kept: bool) -> None:
    # RFC 9110 §6.4.1: the head ends the stream; Content-Length describes, but not for 204.
    pair, events, sid = respond(status, [("Content-Length", "5")], b"hello", method=method)
    (response,) = of_type(events, h2.events.ResponseReceived)
    assert response.stream_ended is not None  # END_STREAM on the HEADERS frame
    assert response_body(events, sid) == b""
    assert ("content-length" in dict(response.headers)) == length_kept
    assert pair.server.open_streams == 0


def test_head_response_ends_before_the_app_does() -> None:
    pair = Pair()
    sid = pair.request([(":method", "HEAD"), *GET[1:]])
    pair.exchange()
    pair.server.send_response(sid, "200 OK", [])
    _, events = pair.exchange()
    assert of_type(events, h2.events.StreamEnded)
    assert pair.server.open_streams == 1  # the app is still running
    pair.server.send_data(sid, b"ignored", end_stream=True)
    assert pair.server.open_streams == 0


def test_end_stream_on_the_head_when_there_is_no_body() -> None:
    pair = Pair()
    sid = pair.request()
    pair.exchange()
    pair.server.send_response(sid, "200 OK", [("Content-Length", "0")], end_stream=True)
    _, events = pair.exchange()
    (response,) = of_type(events, h2.events.ResponseReceived)
    assert response.stream_ended is not None
    assert pair.server.open_streams == 0


def test_interim_response_then_final() -> None:
    pair = Pair()
    sid = pair.request()
    pair.exchange()
    pair.server.send_response(sid, "100 Continue", [])
    pair.respond(sid)
    _, events = pair.exchange()
    (interim,) = of_type(events, h2.events.InformationalResponseReceived)
    assert dict(interim.headers)[":status"] == "100"
    (final,) = of_type(events, h2.events.ResponseReceived)
    assert dict(final.headers)[":status"] == "200"


@pytest.mark.parametrize(
    ("status", "headers"),
    [
        ("abc", []),
        ("99 Low", []),
        ("101 Switching Protocols", []),
        ("200 OK", [("bad name", "v")]),
        ("200 OK", [(":status", "201")]),
        ("200 OK", [("x-a", "a\r\nb")]),
        ("200 OK", [("x-a", "caf\u20ac")]),
        ("200 OK", [("content-length", "x")]),
        ("200 OK", [("content-length", "1"), ("content-length", "2")]),
    ],
)
def test_invalid_response_head_raises_without_effect(
    status: str, headers: list[tuple[str, str]]
) -> None:
    pair = Pair()
    sid = pair.request()
    pair.exchange()
    with pytest.raises(LocalProtocolError) as info:
        pair.server.send_response(sid, status, headers)
    assert info.value.status == 500
    assert pair.server.data_to_send() == b""
    pair.server.send_response(sid, "500 Internal Server Error", [], end_stream=True)
    _, events = pair.exchange()
    assert dict(head_fields(events))[":status"] == "500"


def test_misuse_raises() -> None:
    pair = Pair()
    sid = pair.request()
    pair.exchange()
    with pytest.raises(LocalProtocolError):
        pair.server.send_data(sid, b"x")  # before the head
    with pytest.raises(LocalProtocolError):
        pair.server.send_response(7, "200 OK", [])  # never opened
    with pytest.raises(LocalProtocolError):
        pair.server.send_response(sid, "100 Continue", [], end_stream=True)
    pair.server.send_response(sid, "200 OK", [])
    with pytest.raises(LocalProtocolError):
        pair.server.send_response(sid, "200 OK", [])


def test_sending_after_a_client_reset_is_a_no_op() -> None:
    pair = Pair()
    sid = pair.request()
    pair.exchange()
    pair.server.send_response(sid, "200 OK", [])
    pair.client.reset_stream(sid, ErrorCodes.CANCEL)
    pair.exchange()
    assert not pair.server.stream_open(sid)
    pair.server.send_data(sid, b"late")
    assert pair.server.open_streams == 1  # until the app says it is done
    pair.server.send_data(sid, b"", end_stream=True)
    assert pair.server.open_streams == 0
    assert pair.server.data_to_send() == b""
    pair.server.reset_stream(sid)  # idempotent
    pair.server.send_data(sid, b"", end_stream=True)


def test_early_response_asks_the_client_to_stop_uploading() -> None:
    # RFC 9113 §8.1: a complete response, then RST_STREAM(NO_ERROR).
    pair = Pair()
    sid = pair.request([(":method", "POST"), *GET[1:]], b"part", end_stream=False)
    pair.exchange()
    pair.respond(sid)
    _, events = pair.exchange()
    assert of_type(events, h2.events.StreamEnded)
    (reset,) = of_type(events, h2.events.StreamReset)
    assert reset.error_code == ErrorCodes.NO_ERROR


def test_response_frames_respect_the_client_max_frame_size() -> None:
    pair = Pair()
    sid = pair.request()
    pair.exchange()
    pair.client.increment_flow_control_window(10**6)
    pair.client.increment_flow_control_window(10**6, sid)
    pair.exchange()
    pair.respond(sid, b"x" * 100_000)
    out = pair.server.data_to_send()
    sizes = []
    while out:
        length = int.from_bytes(out[:3])
        if out[3] == 0:
            sizes.append(length)
        out = out[9 + length :]
    assert max(sizes) == 16384 and sum(sizes) == 100_000


def test_large_response_head_uses_continuation() -> None:
    pair = Pair()
    sid = pair.request()
    pair.exchange()
    pair.server.send_response(sid, "200 OK", [(f"x-{i}", "v" * 100) for i in range(300)])
    pair.server.send_data(sid, b"", end_stream=True)
    _, events = pair.exchange()
    assert len(head_fields(events)) == 303
