"""Request-side rules of the HTTP/1.1 core, one test (or table) per rule."""

from __future__ import annotations

import subprocess
import sys

import pytest

from preforkd.errors import LocalProtocolError, RemoteProtocolError
from preforkd.proto.events import ConnectionClosed, Data, EndOfMessage, Request
from preforkd.proto.h1 import H1Connection, H1Limits, H1ProtocolError

from .h1_support import error_of, events_of, feed, request

# With the native head parser and with llhttp alone (tests/proto/conftest.py).
pytestmark = pytest.mark.usefixtures("h1_head_parser")

HOST = b"Host: example.com\r\n"


def get(target: bytes = b"/", extra: bytes = b"", version: bytes = b"1.1") -> bytes:
    return b"GET " + target + b" HTTP/" + version + b"\r\n" + HOST + extra + b"\r\n"


def post(framing: bytes, body: bytes, extra: bytes = b"") -> bytes:
    return b"POST /p HTTP/1.1\r\n" + HOST + framing + extra + b"\r\n" + body


# -- purity ---------------------------------------------------------------------------


def test_import_pulls_in_no_io_modules() -> None:
    code = (
        "import sys, preforkd.proto.h1\n"
        "print(sorted(m for m in ('asyncio', 'socket', 'threading') if m in sys.modules))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    assert out.strip() == "[]"


# -- events ---------------------------------------------------------------------------


def test_bodyless_request_gives_request_then_end() -> None:
    assert events_of(get(b"/a?b=c", b"Accept: */*\r\n")) == [
        request("GET", "/a?b=c", [("host", "example.com"), ("accept", "*/*")]),
        EndOfMessage(),
    ]


def test_header_names_lower_case_values_stripped_and_latin1() -> None:
    (req, _) = events_of(get(extra=b"X-Name: \t caf\xe9 \t\r\nX-Empty:\r\n"))
    assert isinstance(req, Request)
    assert req.headers == [("host", "example.com"), ("x-name", "caf\xe9"), ("x-empty", "")]


@pytest.mark.parametrize(
    ("version", "extra", "keep_alive"),
    [
        (b"1.1", b"", True),
        (b"1.1", b"Connection: close\r\n", False),
        (b"1.1", b"Connection: keep-alive, close\r\n", False),
        (b"1.0", b"", False),
        (b"1.0", b"Connection: keep-alive\r\n", True),
        (b"1.0", b"Connection: Keep-Alive\r\n", True),
    ],
)
def test_keep_alive(version: bytes, extra: bytes, keep_alive: bool) -> None:
    (req, _) = events_of(get(extra=extra, version=version))
    assert isinstance(req, Request)
    assert req.keep_alive is keep_alive


def test_pipelined_requests_in_one_buffer_come_out_in_order() -> None:
    data = get(b"/1") + post(b"Content-Length: 2\r\n", b"hi") + get(b"/3")
    events = events_of(data)
    assert [type(e) for e in events] == [
        Request,
        EndOfMessage,
        Request,
        Data,
        EndOfMessage,
        Request,
        EndOfMessage,
    ]
    assert [e.target for e in events if isinstance(e, Request)] == ["/1", "/p", "/3"]


def test_keep_alive_connection_serves_requests_across_calls() -> None:
    conn = H1Connection()
    for i in range(3):
        events = conn.receive_data(get(b"/%d" % i))
        assert [type(e) for e in events] == [Request, EndOfMessage]


# -- bodies ---------------------------------------------------------------------------


def test_content_length_body() -> None:
    events = events_of(post(b"Content-Length: 5\r\n", b"hello"))
    req = events[0]
    assert isinstance(req, Request)
    assert (req.has_body, req.content_length) == (True, 5)
    assert events[1:] == [Data(b"hello"), EndOfMessage()]


def test_content_length_zero_has_no_body() -> None:
    (req, end) = events_of(post(b"Content-Length: 0\r\n", b""))
    assert isinstance(req, Request)
    assert (req.has_body, req.content_length, end) == (False, 0, EndOfMessage())


def test_body_arriving_in_pieces_gives_data_as_it_comes() -> None:
    conn = H1Connection()
    assert len(conn.receive_data(post(b"Content-Length: 6\r\n", b"ab"))) == 2
    assert conn.receive_data(b"cd") == [Data(b"cd")]
    assert conn.receive_data(b"ef") == [Data(b"ef"), EndOfMessage()]


def test_chunked_body_extensions_ignored_trailers_dropped() -> None:
    body = b'3;ext=1;x="q"\r\nabc\r\n2\r\nde\r\n0\r\nX-Trailer: t\r\n\r\n'
    events = events_of(post(b"Transfer-Encoding: chunked\r\n", body) + get(b"/next"))
    req, data, end, nxt, _ = events
    assert isinstance(req, Request) and isinstance(nxt, Request)
    assert (req.has_body, req.content_length) == (True, None)
    assert (data, end) == (Data(b"abcde"), EndOfMessage())
    assert nxt.headers == [("host", "example.com")]  # the trailer did not leak


@pytest.mark.parametrize(
    ("version", "value", "expected"),
    [
        (b"1.1", b"100-continue", True),
        (b"1.1", b"100-Continue", True),
        (b"1.0", b"100-continue", False),  # RFC 9110 §10.1.1: MUST ignore in HTTP/1.0
        (b"1.1", b"something-else", False),
    ],
)
def test_expect_continue(version: bytes, value: bytes, expected: bool) -> None:
    (req, _) = events_of(get(extra=b"Expect: " + value + b"\r\n", version=version))
    assert isinstance(req, Request)
    assert req.expect_continue is expected


# -- malformed input --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "status"),
    [
        pytest.param(b"GET / HTTP/1.1\r\nHost : x\r\n\r\n", 400, id="space-before-colon"),
        pytest.param(get(extra=b"X: a\r\n b\r\n"), 400, id="obs-fold"),
        pytest.param(b"GET / HTTP/1.1\r\n\r\n", 400, id="no-host"),
        pytest.param(get(extra=b"Host: other\r\n"), 400, id="two-hosts"),
        pytest.param(b"GET / HTTP/1.1\r\nHost: a b\r\n\r\n", 400, id="bad-host"),
        pytest.param(post(b"Content-Length: 1x\r\n", b""), 400, id="bad-cl"),
        pytest.param(post(b"Content-Length: 1\r\nContent-Length: 2\r\n", b"ab"), 400, id="cl-cl"),
        pytest.param(
            post(b"Content-Length: 1\r\nContent-Length: 1\r\n", b"a"), 400, id="cl-cl-same"
        ),
        pytest.param(
            post(b"Content-Length: 3\r\nTransfer-Encoding: chunked\r\n", b""), 400, id="cl-te"
        ),
        pytest.param(
            post(b"Transfer-Encoding: chunked\r\nContent-Length: 3\r\n", b""), 400, id="te-cl"
        ),
        pytest.param(post(b"Transfer-Encoding: gzip, chunked\r\n", b""), 501, id="te-gzip-chunked"),
        pytest.param(post(b"Transfer-Encoding: gzip\r\n", b""), 400, id="te-not-chunked"),
        pytest.param(
            post(b"Transfer-Encoding: chunked, identity\r\n", b""), 400, id="te-chunked-identity"
        ),
        pytest.param(
            b"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400, id="te-http10"
        ),
        pytest.param(
            post(b"Transfer-Encoding: chunked\r\n", b"0x3\r\nabc\r\n"), 400, id="chunk-0x"
        ),
        pytest.param(
            post(b"Transfer-Encoding: chunked\r\n", b"3\r\nabcX\r\n"), 400, id="chunk-no-crlf"
        ),
        pytest.param(get(version=b"2.0"), 505, id="http2"),
        pytest.param(get(version=b"3.0"), 505, id="http3"),
        pytest.param(b"GET / HTTP/1.1\nHost: x\n\n", 400, id="bare-lf"),
        pytest.param(get(extra=b"X: a\x00b\r\n"), 400, id="nul-in-value"),
        pytest.param(get(extra=b"X: a\rb\r\n"), 400, id="cr-in-value"),
        pytest.param(get(b"*"), 400, id="asterisk-not-options"),
        pytest.param(b"CONNECT /x HTTP/1.1\r\nHost: x\r\n\r\n", 400, id="connect-origin-form"),
        pytest.param(get(b"example.com:80"), 400, id="authority-not-connect"),
        pytest.param(get(b"/a#frag"), 400, id="fragment"),
    ],
)
def test_malformed_request(data: bytes, status: int) -> None:
    assert error_of(data).status == status


def test_request_line_too_long_is_refused_before_it_ends() -> None:
    conn = H1Connection()
    conn.receive_data(b"GET /")
    with pytest.raises(RemoteProtocolError) as info:
        for _ in range(10):
            conn.receive_data(b"a" * 1000)  # the line never ends
    assert info.value.status == 414


def test_too_many_fields_are_refused_as_they_arrive() -> None:
    conn = H1Connection()
    conn.receive_data(b"GET / HTTP/1.1\r\n" + HOST)
    with pytest.raises(RemoteProtocolError) as info:
        for i in range(200):
            conn.receive_data(b"X-%d: v\r\n" % i)  # the head never ends
    assert info.value.status == 431


def test_one_huge_field_is_refused_while_it_arrives() -> None:
    conn = H1Connection()
    conn.receive_data(b"GET / HTTP/1.1\r\n" + HOST + b"X-Big: ")
    fed = 0
    with pytest.raises(RemoteProtocolError) as info:
        while fed < 1_000_000:
            conn.receive_data(b"v" * 1000)  # the value never ends
            fed += 1000
    assert info.value.status == 431
    assert fed < 20_000  # bounded by the limits, not by what the client sends


def test_endless_chunk_extension_is_refused() -> None:
    conn = H1Connection()
    conn.receive_data(post(b"Transfer-Encoding: chunked\r\n", b"1;x="))
    with pytest.raises(RemoteProtocolError) as info:
        for _ in range(100):
            conn.receive_data(b"a" * 1000)
    assert info.value.status == 400


@pytest.mark.parametrize(
    ("data", "status"),
    [
        (b"GET /" + b"a" * 86 + b" HTTP/1.1\r\n" + HOST + b"\r\n", None),  # 100 bytes
        (b"GET /" + b"a" * 87 + b" HTTP/1.1\r\n" + HOST + b"\r\n", 414),
        (b"DELETE /" + b"a" * 84 + b" HTTP/1.1\r\n" + HOST + b"\r\n", 414),
        (get(extra=b"X: 1\r\nY: 2\r\n"), None),  # 3 fields
        (get(extra=b"X: 1\r\nY: 2\r\nZ: 3\r\n"), 431),
        (get(extra=b"X-Twenty: " + b"v" * 12 + b"\r\n"), None),  # name + value = 20
        (get(extra=b"X-Twenty: " + b"v" * 13 + b"\r\n"), 431),
    ],
)
def test_custom_limits(data: bytes, status: int | None) -> None:
    limits = H1Limits(max_request_line=100, max_header_fields=3, max_header_field_size=20)
    if status is None:
        assert isinstance(events_of(data, limits=limits)[0], Request)
    else:
        assert error_of(data, limits=limits).status == status


def test_limits_must_be_positive() -> None:
    with pytest.raises(ValueError, match="max_header_fields"):
        H1Limits(max_header_fields=0)


def test_error_is_sticky() -> None:
    conn = H1Connection()
    with pytest.raises(RemoteProtocolError):
        conn.receive_data(b"NOT HTTP\r\n\r\n")
    for data in (get(), b""):
        with pytest.raises(RemoteProtocolError) as info:
            conn.receive_data(data)
        assert info.value.status == 400


def test_error_carries_the_events_before_it() -> None:
    with pytest.raises(H1ProtocolError) as info:
        feed(get(b"/good") + b"GET /bad HTTP/1.1\r\n\r\n")
    assert info.value.status == 400
    assert [type(e) for e in info.value.events] == [Request, EndOfMessage]


# -- targets --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("line", "target"),
    [
        (b"GET /a/b?c=d HTTP/1.1", "/a/b?c=d"),
        (b"GET http://example.com/x HTTP/1.1", "http://example.com/x"),
        (b"OPTIONS * HTTP/1.1", "*"),
        (b"CONNECT example.com:443 HTTP/1.1", "example.com:443"),
    ],
)
def test_request_target_forms(line: bytes, target: str) -> None:
    (req, _) = events_of(line + b"\r\n" + HOST + b"\r\n")
    assert isinstance(req, Request)
    assert req.target == target


def test_connect_with_body_then_next_request() -> None:
    data = b"CONNECT a.example:443 HTTP/1.1\r\nHost: a.example:443\r\nContent-Length: 2\r\n\r\nxy"
    events = events_of(data + get(b"/after"))
    assert [type(e) for e in events] == [Request, Data, EndOfMessage, Request, EndOfMessage]
    assert events[1] == Data(b"xy")


# -- EOF and close ----------------------------------------------------------------------


def test_eof_between_requests() -> None:
    conn = H1Connection()
    conn.receive_data(get())
    assert conn.receive_data(b"") == [ConnectionClosed()]
    assert conn.receive_data(b"") == []  # later calls give nothing more


def test_eof_at_start() -> None:
    assert H1Connection().receive_data(b"") == [ConnectionClosed()]


def test_eof_in_the_middle_of_a_head_is_a_plain_close() -> None:
    conn = H1Connection()
    assert conn.receive_data(b"GET / HTTP/1.1\r\nHo") == []
    assert conn.receive_data(b"") == [ConnectionClosed()]


@pytest.mark.parametrize(
    "data",
    [
        post(b"Content-Length: 10\r\n", b"short"),
        post(b"Transfer-Encoding: chunked\r\n", b"5\r\nhello\r\n"),
        post(b"Transfer-Encoding: chunked\r\n", b"5\r\nhel"),
    ],
)
def test_eof_in_the_middle_of_a_body_is_an_error(data: bytes) -> None:
    conn = H1Connection()
    conn.receive_data(data)
    with pytest.raises(RemoteProtocolError) as info:
        conn.receive_data(b"")
    assert info.value.status == 400


@pytest.mark.parametrize("first", [get(extra=b"Connection: close\r\n"), b"GET / HTTP/1.0\r\n\r\n"])
def test_bytes_after_a_closing_request_are_ignored(first: bytes) -> None:
    conn = H1Connection()
    events = conn.receive_data(first + b"GET /2 HTTP/1.1\r\n")
    assert [type(e) for e in events] == [Request, EndOfMessage]
    assert conn.receive_data(b"anything at all\r\n\r\n") == []
    assert conn.receive_data(b"") == [ConnectionClosed()]


# -- upgrade --------------------------------------------------------------------------

UPGRADE = b"Upgrade: websocket\r\nConnection: Upgrade\r\n"


def test_upgrade_request_sets_the_token_and_stops() -> None:
    conn = H1Connection()
    events = conn.receive_data(get(extra=UPGRADE) + b"\x81\x05frame")
    req = events[0]
    assert isinstance(req, Request)
    assert req.upgrade == "websocket"
    assert events[1:] == [EndOfMessage()]
    assert conn.trailing_data == b"\x81\x05frame"
    assert conn.receive_data(b"more") == []  # parsing has stopped
    assert conn.trailing_data == b"\x81\x05framemore"


def test_upgrade_body_is_delivered_before_trailing_data() -> None:
    conn = H1Connection()
    head = post(b"Content-Length: 5\r\n", b"", b"Upgrade: h2c\r\nConnection: Upgrade\r\n")
    events = conn.receive_data(head + b"he")
    assert isinstance(events[0], Request) and events[0].upgrade == "h2c"
    assert events[1:] == [Data(b"he")]
    assert conn.receive_data(b"llo") == [Data(b"llo"), EndOfMessage()]
    assert conn.receive_data(b"PRI * HTTP/2.0") == []
    assert conn.trailing_data == b"PRI * HTTP/2.0"


def test_declined_upgrade_resumes_http1() -> None:
    conn = H1Connection()
    conn.receive_data(get(extra=UPGRADE) + get(b"/next")[:10])
    conn.receive_data(get(b"/next")[10:])
    events = conn.resume_after_declined_upgrade()
    assert [type(e) for e in events] == [Request, EndOfMessage]
    assert events[0].target == "/next"  # type: ignore[union-attr]
    assert conn.trailing_data == b""
    assert conn.receive_data(get(b"/third"))[0].target == "/third"  # type: ignore[union-attr]


def test_declined_upgrade_before_its_body_is_complete() -> None:
    conn = H1Connection()
    head = post(b"Content-Length: 6\r\n", b"ab", b"Upgrade: h2c\r\nConnection: Upgrade\r\n")
    assert [type(e) for e in conn.receive_data(head)] == [Request, Data]
    assert conn.resume_after_declined_upgrade() == []
    events = conn.receive_data(b"cdef" + get(b"/n"))
    assert [type(e) for e in events] == [Data, EndOfMessage, Request, EndOfMessage]


def test_declined_upgrade_with_nothing_after() -> None:
    conn = H1Connection()
    conn.receive_data(get(extra=UPGRADE))
    assert conn.resume_after_declined_upgrade() == []
    assert [type(e) for e in conn.receive_data(get())] == [Request, EndOfMessage]


def test_eof_while_an_upgrade_is_pending() -> None:
    conn = H1Connection()
    conn.receive_data(get(extra=UPGRADE))
    assert conn.receive_data(b"") == [ConnectionClosed()]


def test_resume_without_a_pending_upgrade_is_a_caller_error() -> None:
    with pytest.raises(LocalProtocolError):
        H1Connection().resume_after_declined_upgrade()


@pytest.mark.parametrize(
    "data",
    [
        get(extra=UPGRADE, version=b"1.0"),  # RFC 9110 §7.8: MUST ignore in HTTP/1.0
        get(extra=b"Upgrade: websocket\r\n"),  # no "upgrade" connection option
        get(extra=b"Upgrade: websocket\r\nConnection: close, upgrade\r\n"),
        post(
            b"Transfer-Encoding: chunked\r\n",
            b"0\r\n\r\n",
            b"Upgrade: h2c\r\nConnection: upgrade\r\n",
        ),
    ],
)
def test_upgrade_ignored(data: bytes) -> None:
    (req, *_) = events_of(data)
    assert isinstance(req, Request)
    assert req.upgrade is None


def test_ignored_upgrade_with_chunked_body_parses_on() -> None:
    up = b"Upgrade: h2c\r\nConnection: upgrade\r\n"
    data = post(b"Transfer-Encoding: chunked\r\n", b"3\r\nabc\r\n0\r\n\r\n", up) + get(b"/2")
    events = events_of(data)
    assert [type(e) for e in events] == [Request, Data, EndOfMessage, Request, EndOfMessage]
    assert events[1] == Data(b"abc")


def test_chunked_head_found_after_pipelined_requests_split_at_every_offset() -> None:
    # The end of a chunked head is worked out from the requests before it in the same
    # buffer (proto/h1.py _resolve); the whitespace in its chunk extension is refused by
    # llhttp, so a wrong offset shows up as an error, not as a silently different body.
    data = (
        get(b"/1")
        + post(b"Content-Length: 6\r\n", b"\r\n\r\nab")
        + get(b"/3")
        + post(b"Transfer-Encoding: chunked\r\n", b"3 ; x = 1\r\nabc\r\n0\r\n\r\n")
        + get(b"/5")
    )
    whole = events_of(data)
    assert [e.target for e in whole if isinstance(e, Request)] == ["/1", "/p", "/3", "/p", "/5"]
    assert Data(b"abc") in whole
    for cut in range(1, len(data)):
        assert events_of(data, splits=[cut]) == whole, cut
        later = [c for c in (cut + 7, cut + 40) if c < len(data)]
        assert events_of(data, splits=[cut, *later]) == whole, cut
