"""The C ResponseFramer.head (preforkd.native._h1frame) against the Python reference.

Each case frames the same response twice, with the C head (bound here with a counting
fallback) and with ``head_py``, and compares the bytes, the framer's state after it and
the body framing that follows, or the exceptions (type, message and status). Each
hand-written case also states whether C takes it or hands it to the reference: every
error goes to the reference, which raises it. The tests run whether or not
PREFORKD_PURE_PYTHON is set; they need the module built (test_built.py says why not).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from preforkd.errors import ProtocolError
from preforkd.proto import h1_response
from preforkd.proto.events import Request
from preforkd.proto.h1_response import ResponseFramer, head_py

_h1frame = pytest.importorskip("preforkd.native._h1frame", reason="C accelerators not built")

DATE = b"Fri, 04 Dec 2026 05:00:00 GMT"


class Counted:
    """The reference head(), counting the calls the C head hands over."""

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, *args: Any, **kwargs: Any) -> bytes:
        self.calls += 1
        return head_py(*args, **kwargs)


def bind(fallback: Callable[..., bytes]) -> Callable[..., bytes]:
    m = h1_response
    return _h1frame.bind_head(  # type: ignore[no-any-return]
        fallback, ResponseFramer, Request, m._NONE, m._LENGTH, m._CHUNKED, m._CLOSE
    ).__get__(None, ResponseFramer)


def outcome(head: Callable[..., bytes], framer: Any, status: Any, headers: Any) -> Any:
    try:
        data = head(framer, status, headers)
    except Exception as exc:
        return ("raised", type(exc), str(exc), getattr(exc, "status", None))
    state = [getattr(framer, name) for name in ResponseFramer.__slots__]
    try:  # what the framing chosen does to a body: 5 bytes, then the end
        after = [framer.body(b"hello"), framer.end(), framer.keep_alive]
    except ProtocolError as exc:
        after = [str(exc)]
    return ("ok", data, state, after)


def make_request(method: str = "GET", version: str = "1.1", keep_alive: Any = None) -> Request:
    if keep_alive is None:
        keep_alive = version == "1.1"
    return Request(method, "/", version, [("host", "h")], keep_alive=keep_alive)


def compare(
    status: Any,
    headers: Any,
    request: Any = None,
    *,
    fast: bool | None = True,
    server: bytes = b"preforkd",
    framer_class: type[ResponseFramer] = ResponseFramer,
) -> Any:
    """Both heads on the same input; ``fast``: whether C must take it (None: either)."""
    counted = Counted()
    c_head = bind(counted)
    request = make_request() if request is None else request
    got = outcome(c_head, framer_class(request, DATE, server), status, headers)
    want = outcome(head_py, framer_class(request, DATE, server), status, headers)
    assert got == want
    if fast is not None:
        assert counted.calls == (0 if fast else 1)
    return got


HELLO = [("Content-Type", "text/plain"), ("Content-Length", "13")]


@pytest.mark.parametrize("method", ["GET", "HEAD", "POST"])
@pytest.mark.parametrize(
    ("version", "keep_alive"), [("1.1", True), ("1.1", False), ("1.0", True), ("1.0", False)]
)
@pytest.mark.parametrize(
    "status",
    [
        "200 OK",
        "200",
        "204 No Content",
        "304 Not Modified",
        "100 Continue",
        "101 X",
        "199 ?",
        "404 Not Found",
        "599 Whatever",
    ],
)
@pytest.mark.parametrize("headers", [HELLO, [("Content-Type", "text/plain")], []])
def test_framing(method: str, version: str, keep_alive: bool, status: str, headers: Any) -> None:
    # RFC 9110 §6.4.1 (no content for HEAD, 1xx, 204, 304), §8.6 (Content-Length kept for
    # HEAD and 304); RFC 9112 §6.3 (close-delimited for HTTP/1.0), §7.1, §9.3, §9.6.
    compare(status, headers, make_request(method, version, keep_alive))


@pytest.mark.parametrize(
    "headers",
    [
        [("Date", "Thu, 01 Jan 2026 00:00:00 GMT")],
        [("server", "mine/1.0")],
        [("DATE", "d"), ("Server", "s"), ("X-A", "1")],
        [("Connection", "close")],
        [("Connection", "Keep-Alive, CLOSE")],
        [("connection", " close ,x")],
        [("Connection", "keep-alive")],
        [("Connection", "")],
        [("Connection", ",,")],
        [("Connection", "closed")],
        [("Keep-Alive", "timeout=5"), ("Upgrade", "h2c"), ("Proxy-Connection", "x")],
        [("Transfer-Encoding", "chunked")],
        [("transfer-encoding", " Chunked\t")],
        [("Transfer-Encoding", "chunked"), ("Content-Length", "5")],
        [("Content-Length", "5"), ("Content-Length", "5")],
        [("Content-Length", " 5\t")],
        [("Content-Length", "005")],
        [("Content-Length", "0")],
        [("Content-Length", "4")],  # shorter than the body: truncated
        [("Content-Length", "999999999999999999")],  # 18 digits: the most C takes
        [("X-Tab", "a\tb"), ("X-Latin", "caf\xe9 \x80\xff"), ("X-Empty", "")],
        [("X-Long", "v" * 3000), ("X-Many", "w" * 3000)],  # past the C stack buffer
        [(f"X-{i}", str(i)) for i in range(200)],
        [("!#$%&'*+-.^_`|~09azAZ", "token characters")],
    ],
)
def test_fields_taken(headers: list[tuple[str, str]]) -> None:
    compare("200 OK", headers)
    compare("200 OK", headers, make_request(version="1.0"))


@pytest.mark.parametrize(
    "headers",
    [
        [("Content-Length", "1" * 19)],  # valid, past what C parses
        [("Content-Length", "5\xa0")],  # str.strip() removes U+00A0: the reference's rule
        [("Connection", "close\xa0")],
        [("Transfer-Encoding", "\xa0chunked")],
    ],
)
def test_valid_fields_left_to_the_reference(headers: list[tuple[str, str]]) -> None:
    compare("200 OK", headers, fast=False)


@pytest.mark.parametrize(
    ("status", "headers"),
    [
        ("200 OK", [("Bad Name", "v")]),
        ("200 OK", [("", "v")]),
        ("200 OK", [("na:me", "v")]),
        ("200 OK", [("n\xe9", "v")]),
        ("200 OK", [("X", "a\r\nInjected: 1")]),
        ("200 OK", [("X", "a\nb")]),
        ("200 OK", [("X", "nul\x00")]),
        ("200 OK", [("X", "del\x7f")]),
        ("200 OK", [("X", "\x1f")]),
        ("200 OK", [("X", "euro \u20ac")]),  # not latin-1
        ("200 OK", [("Content-Length", "abc")]),
        ("200 OK", [("Content-Length", "")]),
        ("200 OK", [("Content-Length", "+5")]),
        ("200 OK", [("Content-Length", "-1")]),
        ("200 OK", [("Content-Length", "5, 5")]),
        ("200 OK", [("Content-Length", "\xb2")]),
        ("200 OK", [("Content-Length", "5"), ("Content-Length", "6")]),
        ("200 OK", [("Transfer-Encoding", "gzip")]),
        ("200 OK", [("Transfer-Encoding", "gzip, chunked")]),
        ("200 OK", [("X", 1)]),
        ("200 OK", [(1, "v")]),
        ("200 OK", [("X", None)]),
        ("200 OK", [("X", "v", "w")]),
        ("200 OK", [("X",)]),
        ("200 OK", ["XY"]),
        ("200 OK", [["X", "v"]]),  # a list pair: the reference unpacks it
        ("200 OK", (("X", "v"),)),  # a tuple of fields: the reference iterates it
        ("200 OK", None),
        ("200 OK", [("X", "v"), ("Y", "\r")]),  # after a field C has written already
        ("99 X", []),
        ("600 X", []),
        ("2000", []),
        ("20", []),
        ("", []),
        ("200\tOK", []),
        ("200 OK\r\n", []),
        ("200 \u20ac", []),
        ("\uff12\uff10\uff10 OK", []),  # fullwidth digits: not [0-9]
        (200, []),
        (b"200 OK", []),
        (None, []),
    ],
)
def test_errors_and_odd_shapes_go_to_the_reference(status: Any, headers: Any) -> None:
    compare(status, headers, fast=False)


@pytest.mark.parametrize("status", ["200  two spaces", "200 ", "200 caf\xe9\x80\xff", "200 \t"])
def test_statuses_taken(status: str) -> None:
    compare(status, HELLO)


class Str(str):
    pass


def test_subclasses_go_to_the_reference() -> None:
    compare(Str("200 OK"), [], fast=False)
    compare("200 OK", [(Str("X"), "v")], fast=False)
    compare("200 OK", [("X", Str("v"))], fast=False)
    compare("200 OK", [], make_request(method=Str("HEAD")), fast=False)
    compare("200 OK", [], make_request(version=Str("1.0")), fast=False)

    class Framer(ResponseFramer):
        __slots__ = ()

    compare("200 OK", HELLO, fast=False, framer_class=Framer)

    class OtherRequest(Request):
        pass

    compare("200 OK", HELLO, OtherRequest("GET", "/", "1.1", []), fast=False)


def test_odd_requests_go_to_the_reference() -> None:
    compare("200 OK", HELLO, make_request(keep_alive=1), fast=False)
    compare("200 OK", HELLO, make_request(version="2"))  # neither 1.0 nor 1.1: no Connection
    compare("200 OK", [], make_request(version="2"))  # nor chunked: delimited by closing
    counted = Counted()
    c_head = bind(counted)
    framer = ResponseFramer(make_request(), DATE)
    framer._server = "not bytes"  # type: ignore[assignment]
    with pytest.raises(TypeError):
        c_head(framer, "200 OK", [])
    assert counted.calls == 1


def test_custom_server_line_is_taken() -> None:
    got = compare("200 OK", [], server=b"custom/2")
    assert b"\r\nServer: custom/2\r\n" in got[1]


def test_head_twice_and_wrong_calls_go_to_the_reference() -> None:
    counted = Counted()
    c_head = bind(counted)
    framer = ResponseFramer(make_request(), DATE)
    c_head(framer, "200 OK", HELLO)
    with pytest.raises(ProtocolError, match="head\\(\\) called twice"):
        c_head(framer, "200 OK", HELLO)
    assert counted.calls == 1
    with pytest.raises(TypeError):
        c_head(ResponseFramer(make_request(), DATE), "200 OK")
    framer = ResponseFramer(make_request(), DATE)
    assert c_head(framer, "200 OK", headers=HELLO) == head_py(  # by keyword: the reference
        ResponseFramer(make_request(), DATE), "200 OK", HELLO
    )
    assert counted.calls == 3


def test_bind_refuses_classes_without_plain_slots() -> None:
    m = h1_response
    with pytest.raises(TypeError, match="not a plain slot"):
        _h1frame.bind_head(head_py, Request, Request, m._NONE, m._LENGTH, m._CHUNKED, m._CLOSE)
    with pytest.raises(TypeError):
        _h1frame.bind_head(head_py, ResponseFramer)


# -- generated ----------------------------------------------------------------------------

_WATCHED = [
    "Content-Length",
    "content-length",
    "Transfer-Encoding",
    "Connection",
    "CONNECTION",
    "Date",
    "Server",
    "Keep-Alive",
    "Upgrade",
    "Proxy-Connection",
]
names = st.one_of(st.sampled_from(_WATCHED), st.text("aZ-_!09 :\xe9", min_size=0, max_size=6))
value_chars = st.sampled_from([*"05 \t,aCc\r\n\x00\x7f\xa0\xe9\u20ac", "close", "chunked"])
values = st.one_of(
    st.lists(value_chars, max_size=6).map("".join),
    st.integers(0, 10**20).map(str),
    st.sampled_from(["chunked", " Chunked ", "close", "keep-alive, close", "5", "13"]),
)
statuses = st.one_of(
    st.sampled_from(["200 OK", "204 No Content", "304 Not Modified", "101 Switching", "200"]),
    st.text("0123456789 OK\t\xe9\u20ac\r", max_size=8),
)


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    status=statuses,
    headers=st.lists(st.tuples(names, values), max_size=6),
    method=st.sampled_from(["GET", "HEAD", "POST"]),
    version=st.sampled_from(["1.0", "1.1"]),
    keep_alive=st.booleans(),
)
def test_generated(
    status: str, headers: list[tuple[str, str]], method: str, version: str, keep_alive: bool
) -> None:
    compare(status, headers, make_request(method, version, keep_alive), fast=None)
