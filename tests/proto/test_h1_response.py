"""Response-side rules: ResponseFramer, error_response and CONTINUE_RESPONSE."""

from __future__ import annotations

import httptools
import pytest

from preforkd.errors import LocalProtocolError
from preforkd.proto.events import Request
from preforkd.proto.h1_response import CONTINUE_RESPONSE, ResponseFramer, error_response

DATE = b"Sat, 21 Nov 2026 20:00:00 GMT"


def make_request(
    method: str = "GET", version: str = "1.1", keep_alive: bool | None = None
) -> Request:
    if keep_alive is None:
        keep_alive = version == "1.1"
    return Request(method, "/", version, [("host", "x")], keep_alive=keep_alive)


def framer(
    method: str = "GET", version: str = "1.1", keep_alive: bool | None = None
) -> ResponseFramer:
    return ResponseFramer(make_request(method, version, keep_alive), DATE)


def header_lines(head: bytes) -> list[bytes]:
    assert head.endswith(b"\r\n\r\n")
    return head[:-4].split(b"\r\n")


def fields(head: bytes) -> dict[bytes, list[bytes]]:
    out: dict[bytes, list[bytes]] = {}
    for line in header_lines(head)[1:]:
        name, _, value = line.partition(b": ")
        out.setdefault(name.lower(), []).append(value)
    return out


class _Response:
    """Collects what httptools' response parser sees: a check that our framing parses."""

    def __init__(self) -> None:
        self.body = b""
        self.complete = False
        self.headers: list[tuple[bytes, bytes]] = []

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name, value))

    def on_body(self, data: bytes) -> None:
        self.body += data

    def on_message_complete(self) -> None:
        self.complete = True


def parse_response(data: bytes) -> _Response:
    response = _Response()
    httptools.HttpResponseParser(response).feed_data(data)
    return response


# -- head ---------------------------------------------------------------------------


def test_status_line_date_server_and_headers() -> None:
    head = framer().head("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "2")])
    lines = header_lines(head)
    assert lines[0] == b"HTTP/1.1 200 OK"
    assert fields(head) == {
        b"content-type": [b"text/plain"],
        b"date": [DATE],
        b"server": [b"preforkd"],
        b"content-length": [b"2"],
    }


def test_status_without_reason_phrase_keeps_the_space() -> None:
    assert framer().head("204", []).startswith(b"HTTP/1.1 204 \r\n")


def test_app_date_and_server_win() -> None:
    head = framer().head("200 OK", [("date", "yesterday"), ("SERVER", "app/1.0")])
    assert fields(head)[b"date"] == [b"yesterday"]
    assert fields(head)[b"server"] == [b"app/1.0"]


def test_custom_server_value() -> None:
    head = ResponseFramer(make_request(), DATE, server=b"edge").head("200 OK", [])
    assert fields(head)[b"server"] == [b"edge"]


def test_values_are_encoded_latin1() -> None:
    head = framer().head("200 OK", [("X-Name", "caf\xe9"), ("X-Tab", "a\tb")])
    assert b"X-Name: caf\xe9\r\n" in head
    assert b"X-Tab: a\tb\r\n" in head


@pytest.mark.parametrize(
    "headers",
    [
        [("Bad Name", "v")],
        [("Bad:Name", "v")],
        [("", "v")],
        [("X-Ok", "a\r\nInjected: yes")],
        [("X-Ok", "a\nb")],
        [("X-Ok", "a\rb")],
        [("X-Ok", "a\x00b")],
        [("X-Ok", "a\x7fb")],
        [("X-Ok", "snow\u2603man")],  # not latin-1
        [("X-Ok", b"bytes")],  # WSGI wants str
        [(b"X-Bytes", "v")],
        [("Content-Length", "12a")],
        [("Content-Length", "-1")],
        [("Content-Length", "\u0662")],  # a non-ASCII digit
        [("Content-Length", "1"), ("Content-Length", "2")],
        [("Transfer-Encoding", "gzip")],
    ],
)
def test_invalid_headers_are_local_errors(headers: list[tuple[str, str]]) -> None:
    with pytest.raises(LocalProtocolError) as info:
        framer().head("200 OK", headers)
    assert info.value.status == 500


@pytest.mark.parametrize(
    "status", ["", "OK", "20 OK", "600 Nope", "099 x", "200OK", "200 a\r\nb", 200]
)
def test_invalid_status_is_a_local_error(status: str) -> None:
    with pytest.raises(LocalProtocolError):
        framer().head(status, [])


def test_head_twice_body_before_head_and_end_twice_are_errors() -> None:
    f = framer()
    with pytest.raises(LocalProtocolError):
        f.body(b"x")
    with pytest.raises(LocalProtocolError):
        f.end()
    f.head("200 OK", [])
    with pytest.raises(LocalProtocolError):
        f.head("200 OK", [])
    f.end()
    with pytest.raises(LocalProtocolError):
        f.end()
    with pytest.raises(LocalProtocolError):
        f.body(b"x")


# -- bodiless responses ---------------------------------------------------------------


def test_head_request_sends_no_body_but_keeps_content_length() -> None:
    f = framer("HEAD")
    head = f.head("200 OK", [("Content-Length", "42")])
    assert fields(head)[b"content-length"] == [b"42"]
    assert b"transfer-encoding" not in fields(head)
    assert f.body(b"ignored body") == b""
    assert f.end() == b""
    assert (f.keep_alive, f.bytes_sent) == (True, 0)


def test_head_request_without_content_length_is_not_chunked() -> None:
    f = framer("HEAD")
    head = f.head("200 OK", [("Transfer-Encoding", "chunked")])
    assert b"transfer-encoding" not in fields(head)
    assert f.body(b"x") == b""
    assert f.end() == b""
    assert f.keep_alive


@pytest.mark.parametrize("status", ["204 No Content", "304 Not Modified", "103 Early Hints"])
def test_no_body_statuses(status: str) -> None:
    f = framer()
    head = f.head(status, [])
    assert b"transfer-encoding" not in fields(head)
    assert f.body(b"not sent") == b""
    assert f.end() == b""
    assert f.keep_alive


def test_204_drops_content_length_304_keeps_it() -> None:
    # RFC 9110 §8.6: never in 204; in 304 it describes the selected representation.
    assert b"content-length" not in fields(
        framer().head("204 No Content", [("Content-Length", "0")])
    )
    assert fields(framer().head("304 Not Modified", [("Content-Length", "7")]))[
        b"content-length"
    ] == [b"7"]


# -- Content-Length -------------------------------------------------------------------


def test_content_length_body_sent_as_is() -> None:
    f = framer()
    head = f.head("200 OK", [("Content-Length", "10")])
    sent = f.body(b"hello") + f.body(b"") + f.body(b"world")
    assert sent == b"helloworld"
    assert f.end() == b""
    assert (f.keep_alive, f.bytes_sent, f.truncated) == (True, 10, False)
    assert parse_response(head + sent).body == b"helloworld"


def test_content_length_excess_is_truncated_and_closes() -> None:
    f = framer()
    f.head("200 OK", [("Content-Length", "4")])
    assert f.keep_alive
    assert f.body(b"abc") == b"abc"
    assert f.body(b"defgh") == b"d"
    assert f.body(b"more") == b""
    f.end()
    assert (f.keep_alive, f.truncated, f.bytes_sent) == (False, True, 4)


def test_content_length_short_body_closes() -> None:
    f = framer()
    f.head("200 OK", [("Content-Length", "10")])
    f.body(b"abc")
    assert f.end() == b""
    assert f.keep_alive is False


def test_identical_duplicate_content_length_is_sent_once() -> None:
    head = framer().head("200 OK", [("Content-Length", "3"), ("content-length", " 3 ")])
    assert fields(head)[b"content-length"] == [b"3"]


# -- chunked and close-delimited ------------------------------------------------------


def test_http11_without_content_length_is_chunked() -> None:
    f = framer()
    head = f.head("200 OK", [])
    assert fields(head)[b"transfer-encoding"] == [b"chunked"]
    parts = [f.body(b"hello"), f.body(b""), f.body(b"x" * 300), f.end()]
    assert parts[0] == b"5\r\nhello\r\n"
    assert parts[1] == b""  # an empty chunk would end the body
    assert parts[2].startswith(b"12c\r\n")
    assert parts[3] == b"0\r\n\r\n"
    assert (f.keep_alive, f.bytes_sent) == (True, 305)
    response = parse_response(head + b"".join(parts))
    assert response.complete and response.body == b"hello" + b"x" * 300


def test_app_chunked_is_not_chunked_twice() -> None:
    f = framer()
    head = f.head("200 OK", [("Transfer-Encoding", "Chunked")])
    assert fields(head)[b"transfer-encoding"] == [b"chunked"]
    assert f.body(b"ab") == b"2\r\nab\r\n"


def test_content_length_wins_over_app_chunked() -> None:
    f = framer()
    head = f.head("200 OK", [("Transfer-Encoding", "chunked"), ("Content-Length", "2")])
    assert b"transfer-encoding" not in fields(head)
    assert f.body(b"ab") == b"ab"


def test_http10_without_content_length_is_close_delimited() -> None:
    f = framer(version="1.0", keep_alive=True)
    head = f.head("200 OK", [])
    assert b"transfer-encoding" not in fields(head)
    assert fields(head)[b"connection"] == [b"close"]
    assert f.keep_alive is False
    assert f.body(b"raw bytes") == b"raw bytes"
    assert f.end() == b""
    assert f.bytes_sent == 9


# -- connection management ------------------------------------------------------------


@pytest.mark.parametrize("name", ["Connection", "Keep-Alive", "Upgrade", "Proxy-Connection"])
def test_hop_by_hop_fields_from_the_app_are_dropped(name: str) -> None:
    f = framer()
    head = f.head("200 OK", [(name, "keep-alive"), ("Content-Length", "0")])
    assert name.lower().encode() not in fields(head)
    assert f.keep_alive


def test_app_connection_close_is_honoured() -> None:
    f = framer()
    head = f.head("200 OK", [("Connection", "Close"), ("Content-Length", "0")])
    assert fields(head)[b"connection"] == [b"close"]
    assert f.keep_alive is False


def test_client_close_gets_connection_close() -> None:
    f = framer(keep_alive=False)
    head = f.head("200 OK", [("Content-Length", "0")])
    assert fields(head)[b"connection"] == [b"close"]
    assert f.keep_alive is False


def test_http11_keep_alive_needs_no_connection_field() -> None:
    f = framer()
    assert b"connection" not in fields(f.head("200 OK", [("Content-Length", "0")]))
    assert f.keep_alive


def test_http10_keep_alive_is_announced() -> None:
    f = framer(version="1.0", keep_alive=True)
    head = f.head("200 OK", [("Content-Length", "1")])
    assert fields(head)[b"connection"] == [b"keep-alive"]
    assert f.keep_alive


def test_http10_without_keep_alive_closes() -> None:
    f = framer(version="1.0", keep_alive=False)
    head = f.head("200 OK", [("Content-Length", "1")])
    assert fields(head)[b"connection"] == [b"close"]
    assert f.keep_alive is False


# -- canned responses -----------------------------------------------------------------


def test_continue_response() -> None:
    assert CONTINUE_RESPONSE == b"HTTP/1.1 100 Continue\r\n\r\n"


@pytest.mark.parametrize("status", [400, 413, 414, 431, 500, 501, 503, 505])
def test_error_response(status: int) -> None:
    data = error_response(status, DATE)
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    assert lines[0].startswith(b"HTTP/1.1 %d " % status)
    got = fields(head + b"\r\n\r\n")
    assert got[b"date"] == [DATE]
    assert got[b"server"] == [b"preforkd"]
    assert got[b"content-type"] == [b"text/plain; charset=utf-8"]
    assert got[b"connection"] == [b"close"]
    assert got[b"content-length"] == [b"%d" % len(body)]
    assert body.startswith(b"%d " % status)
    assert parse_response(data).complete


def test_error_response_custom_server_and_unknown_status() -> None:
    data = error_response(599, DATE, server=b"x")
    assert data.startswith(b"HTTP/1.1 599 ")
    assert b"\r\nServer: x\r\n" in data
    with pytest.raises(ValueError):
        error_response(99, DATE)


def test_fields_seen_before_frame_the_same_and_still_conflict() -> None:
    # head() remembers fields it has checked (proto/h1_response.py _field_lines): a
    # remembered Content-Length must still steer the framing and still conflict.
    headers = [("Content-Type", "text/plain"), ("Content-Length", "3"), ("X-A", "b")]
    first, second = framer().head("200 OK", headers), framer().head("200 OK", list(headers))
    assert first == second
    assert fields(first)[b"content-length"] == [b"3"]
    framer().head("200 OK", [("Content-Length", "4")])
    with pytest.raises(LocalProtocolError):
        framer().head("200 OK", [("Content-Length", "3"), ("Content-Length", "4")])
    head = framer(method="HEAD").head("204 No Content", [("Content-Length", "3")])
    assert b"content-length" not in fields(head)
    with pytest.raises(LocalProtocolError):
        framer().head("200 OK", [("X-A", ["unhashable"])])  # type: ignore[list-item]
