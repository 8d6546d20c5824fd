"""The native HTTP/1.1 head parser (preforkd/native/_h1head.c) against the reference path.

The native parser only takes a subset of what llhttp accepts and declines the rest, so
the H1 core must give the same events, or the same error, with it and without it: for
requests built to sit on both sides of every rule it checks, whole and cut in two.
"""

from __future__ import annotations

import itertools
import os
import shutil
import tracemalloc

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from preforkd import native
from preforkd.errors import RemoteProtocolError
from preforkd.proto import h1
from preforkd.proto.events import Data, EndOfMessage, Request
from preforkd.proto.h1 import H1Connection, H1Limits

parse_head = h1._parse_head
KNOWN_METHODS = h1._LLHTTP_METHODS
METHOD_ERRORS = {
    "method not implemented here",
    "Expected space after method",
    "Invalid method encountered",
}
needs_native = pytest.mark.skipif(parse_head is None, reason="native head parser not built")

LIMITS = H1Limits(max_request_line=64, max_header_fields=6, max_header_field_size=40)
SETTINGS = settings(
    max_examples=int(os.environ.get("HYPOTHESIS_EXAMPLES", "400")),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)


def test_the_native_parser_is_built_where_a_compiler_is() -> None:
    """The default install must be the fast one: a silent fallback would hide a broken
    build (setup.py marks the extension optional)."""
    if not native.ENABLED:
        pytest.skip("PREFORKD_PURE_PYTHON is set")
    if shutil.which("cc") is None and shutil.which("gcc") is None:
        pytest.skip("no C compiler: the pure-Python path is the install")
    assert "h1head" in native.available()
    assert parse_head is not None


def outcome(data: bytes, cuts: tuple[int, ...] = (), native_path: bool = True) -> object:
    """The events (or the error) the core gives for ``data`` fed in pieces cut at ``cuts``."""
    saved = h1._parse_head
    h1._parse_head = saved if native_path else None
    try:
        conn = H1Connection(LIMITS)
        events: list[object] = []
        bounds = [0, *sorted({c for c in cuts if 0 < c < len(data)}), len(data)]
        try:
            for start, end in itertools.pairwise(bounds):
                events += conn.receive_data(data[start:end])
        except RemoteProtocolError as exc:
            return [*events, *getattr(exc, "events", []), ("error", exc.status, str(exc))]
        return events
    finally:
        h1._parse_head = saved


# -- what the native parser takes, and what it declines -----------------------------------

PLAIN = b"GET /a?b=c HTTP/1.1\r\nHost: example.com\r\nUser-Agent: t\r\n\r\n"


@needs_native
def test_a_plain_head_is_taken_in_one_call() -> None:
    assert parse_head is not None
    head = parse_head(PLAIN + b"GET", 0, 8190, 8190, 100)
    assert head == (
        "GET",
        "/a?b=c",
        "1.1",
        [("host", "example.com"), ("user-agent", "t")],
        1,
        "example.com",
        True,
        None,
        len(PLAIN),
    )


@needs_native
@pytest.mark.parametrize(
    "data",
    [
        PLAIN[:-1],  # incomplete
        b"\r\n" + PLAIN,  # an empty line first (RFC 9112 §2.2): llhttp skips it
        b"get / HTTP/1.1\r\nHost: a\r\n\r\n",  # methods are case-sensitive
        b"PROPFIND / HTTP/1.1\r\nHost: a\r\n\r\n",  # not one of the common methods
        b"GET * HTTP/1.1\r\nHost: a\r\n\r\n",  # not origin-form
        b"GET http://a/ HTTP/1.1\r\nHost: a\r\n\r\n",
        b"GET /#f HTTP/1.1\r\nHost: a\r\n\r\n",  # a fragment: refused by the core
        b"GET /\x80 HTTP/1.1\r\nHost: a\r\n\r\n",
        b"GET  / HTTP/1.1\r\nHost: a\r\n\r\n",
        b"GET / HTTP/1.2\r\nHost: a\r\n\r\n",
        b"GET / HTTP/2.0\r\nHost: a\r\n\r\n",
        b"GET / http/1.1\r\nHost: a\r\n\r\n",
        b"GET / HTTP/1.1\nHost: a\r\n\r\n",  # bare LF
        b"GET / HTTP/1.1\r\nHost: a\n\r\n",
        b"GET / HTTP/1.1\r\nHost: a\r\n\n",
        b"GET / HTTP/1.1\r\nHost : a\r\n\r\n",  # whitespace before the colon
        b"GET / HTTP/1.1\r\nHost: a\r\n b\r\n\r\n",  # obs-fold
        b"GET / HTTP/1.1\r\nHost: a\rb\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: a\x00\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: a\x7f\r\n\r\n",
        b"GET / HTTP/1.1\r\n: a\r\n\r\n",
        b"GET / HTTP/1.1\r\nHo(st: a\r\n\r\n",
        b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\nx",
        b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: +1\r\n\r\nx",
        b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1, 1\r\n\r\nx",
        b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1 1\r\n\r\nx",
        b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: \r\n\r\n",
        b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1234567890123456789\r\n\r\n",
        b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: a\r\nUpgrade: h2c\r\nConnection: Upgrade\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: a\r\nProxy-Connection: close\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: a\r\nConnection: keep-alive, x\r\n\r\n",
        b"GET / HTTP/1.0\r\nConnection: close\r\nConnection: keep-alive\r\n\r\n",
    ],
)
def test_what_the_native_parser_declines(data: bytes) -> None:
    assert parse_head is not None
    assert parse_head(data, 0, 8190, 8190, 100) is None
    assert outcome(data) == outcome(data, native_path=False)


@needs_native
def test_limits_are_left_to_the_reference_path() -> None:
    """An over-long line, field or field count is declined, so that the core answers it
    with the reference path's status and message (414, 431)."""
    assert parse_head is not None
    line = b"GET /" + b"a" * 60 + b" HTTP/1.1\r\nHost: a\r\n\r\n"
    field = b"GET / HTTP/1.1\r\nHost: a\r\nX: " + b"v" * 40 + b"\r\n\r\n"
    many = b"GET / HTTP/1.1\r\n" + b"".join(b"X%d: v\r\n" % i for i in range(7)) + b"\r\n"
    for data, status in ((line, 414), (field, 431), (many, 431)):
        assert parse_head(data, 0, 64, 40, 6) is None
        result = outcome(data)
        assert result == outcome(data, native_path=False)
        assert result[-1][:2] == ("error", status)  # type: ignore[index]


@needs_native
def test_keep_alive_follows_the_version_and_connection() -> None:
    assert parse_head is not None
    cases = {
        b"GET / HTTP/1.1\r\nHost: a\r\n\r\n": True,
        b"GET / HTTP/1.1\r\nHost: a\r\nConnection: CLOSE \r\n\r\n": False,
        b"GET / HTTP/1.0\r\n\r\n": False,
        b"GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n": True,
    }
    for data, keep_alive in cases.items():
        head = parse_head(data, 0, 8190, 8190, 100)
        assert head is not None and head[6] is keep_alive
        assert outcome(data) == outcome(data, native_path=False)


@needs_native
@pytest.mark.parametrize(
    ("body", "cut"),
    [(b"", None), (b"hi", None), (b"x" * 100, None), (b"x" * 100, 10), (b"x" * 100, 0)],
)
def test_a_content_length_body_is_counted_as_on_the_reference_path(
    body: bytes, cut: int | None
) -> None:
    """The native parser takes the head; the body is counted by the core, in the read
    with its head or in later ones, and the next request may follow it at once."""
    assert parse_head is not None
    head = b"POST /p HTTP/1.1\r\nHost: a\r\nContent-Length: %d\r\n\r\n" % len(body)
    taken = parse_head(head, 0, 8190, 8190, 100)
    assert taken is not None and taken[7] == len(body)
    data = head + body + PLAIN
    cuts = () if cut is None else (len(head) + cut,)
    fast = outcome(data, cuts)
    assert fast == outcome(data, cuts, native_path=False)
    assert isinstance(fast, list)
    request = fast[0]
    assert isinstance(request, Request)
    assert (request.content_length, request.has_body) == (len(body), bool(body))
    assert b"".join(e.data for e in fast if isinstance(e, Data)) == body
    assert sum(isinstance(e, EndOfMessage) for e in fast) == 2


def test_pipelined_heads_come_out_in_order_with_the_rest_for_llhttp() -> None:
    data = (
        PLAIN
        + b"HEAD /x HTTP/1.1\r\nHost: example.com\r\n\r\n"
        + b"POST /p HTTP/1.1\r\nHost: example.com\r\nContent-Length: 2\r\n\r\nhi"
        + b"GET /last HTTP/1.1\r\nHost: example.com\r\nConnection: close\r\n\r\n"
        + b"GET /ignored HTTP/1.1\r\n"
    )
    result = outcome(data)
    assert result == outcome(data, native_path=False)
    requests = [e for e in result if isinstance(e, Request)]  # type: ignore[attr-defined]
    assert [r.target for r in requests] == ["/a?b=c", "/x", "/p", "/last"]
    assert sum(isinstance(e, EndOfMessage) for e in result) == 4  # type: ignore[attr-defined]


def test_host_rules_hold_on_the_native_path() -> None:
    for data in (
        b"GET / HTTP/1.1\r\n\r\n",  # RFC 9112 §3.2: missing Host
        b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",  # two
        b"GET / HTTP/1.1\r\nHost: a b\r\n\r\n",  # invalid
        b"GET / HTTP/1.1\r\nHost: a\r\n\r\nGET / HTTP/1.1\r\nHost: @\r\n\r\n",
    ):
        result = outcome(data)
        assert result == outcome(data, native_path=False)
        assert result[-1][:2] == ("error", 400)  # type: ignore[index]


# -- generated requests: both paths agree, however the bytes are cut ----------------------

METHODS = ["GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS", "PATCH", "get", "PROPFIND", "FOO"]
TARGET_CHARS = "".join(chr(c) for c in range(0x21, 0x7F)) + " \x80\t"
NAME_CHARS = "abcHOST-_:!~ (\t"
VALUE_CHARS = "ab c\t\x7f\x80\xff:,\r\n\x00"
SPECIAL = [
    ("Host", "example.com"),
    ("host", "a:1"),
    ("Host", "[::1]:8080"),
    ("Host", ""),
    ("Connection", "close"),
    ("connection", "Keep-Alive"),
    ("Connection", "upgrade"),
    ("Content-Length", "3"),
    ("Content-Length", "0"),
    ("Transfer-Encoding", "chunked"),
    ("Upgrade", "h2c"),
    ("Expect", "100-continue"),
    ("Proxy-Connection", "close"),
    ("X-Long", "v" * 38),
    ("User-Agent", "  spaced  "),
]


@st.composite
def raw_requests(draw: st.DrawFn) -> bytes:
    method = draw(st.sampled_from(METHODS))
    target = draw(
        st.one_of(
            st.builds(lambda s: "/" + s, st.text(TARGET_CHARS, max_size=20)),
            st.sampled_from(["*", "http://a/b", "", "/" + "x" * 60]),
        )
    )
    version = draw(st.sampled_from(["HTTP/1.1", "HTTP/1.0", "HTTP/1.2", "HTTP/2.0"]))
    fields = draw(
        st.lists(
            st.one_of(
                st.sampled_from(SPECIAL),
                st.tuples(
                    st.text(NAME_CHARS, min_size=0, max_size=8),
                    st.text(VALUE_CHARS, max_size=8),
                ),
            ),
            max_size=8,
        )
    )
    ows = draw(st.sampled_from(["", " ", "\t", "  "]))
    lines = [f"{method} {target} {version}"] + [f"{n}:{ows}{v}" for n, v in fields]
    eol = draw(st.sampled_from(["\r\n", "\r\n", "\r\n", "\n"]))
    body = "abc" if draw(st.booleans()) else ""
    return (eol.join(lines) + eol + eol + body).encode("latin-1")


TCHAR = "!#$%&'*+-.^_`|~09azAZ"
VCHAR = "".join(chr(c) for c in range(0x21, 0x7F)) + "\xe9"


@st.composite
def plain_requests(draw: st.DrawFn) -> bytes:
    """Heads the native parser takes, then maybe one byte changed to an awkward one."""
    method = draw(st.sampled_from(METHODS[:7]))
    target = "/" + draw(st.text("".join(chr(c) for c in range(0x21, 0x7F) if c != 0x23)))
    version = draw(st.sampled_from(["1.1", "1.0"]))
    fields = [("Host", draw(st.sampled_from(["example.com", "a:1", "[::1]"])))]
    fields += draw(
        st.lists(
            st.tuples(
                st.text(TCHAR, min_size=1, max_size=6),
                st.builds(lambda a, b: a + " " + b, st.text(VCHAR, max_size=6), st.text(VCHAR)),
            ),
            max_size=4,
        )
    )
    if draw(st.booleans()):
        fields.append(draw(st.sampled_from(SPECIAL)))
    head = f"{method} {target} HTTP/{version}\r\n" + "".join(f"{n}: {v}\r\n" for n, v in fields)
    data = bytearray((head + "\r\n").encode("latin-1"))
    if draw(st.booleans()):
        at = draw(st.integers(0, len(data) - 1))
        data[at] = draw(st.sampled_from(b" \t\r\n\x00\x7f\x80:#/"))
    return bytes(data)


@st.composite
def pipelines(draw: st.DrawFn) -> tuple[bytes, tuple[int, ...]]:
    requests = st.one_of(plain_requests(), raw_requests())
    data = b"".join(draw(st.lists(requests, min_size=1, max_size=3)))
    cuts = tuple(draw(st.lists(st.integers(0, len(data)), max_size=2)))
    return data, cuts


@needs_native
@SETTINGS
@given(pipelines())
@example((PLAIN * 2, ()))
@example((b"GET / HTTP/1.1\r\nHost: a\r\n\r\nGET / HTTP/1.1\r\nHost: a b\r\n\r\n", (30,)))
# Found by a mutation fuzz: pipelined after a taken head, judged as a first request.
@example((b"GET / HTTP/1.1\r\nHost: a\r\n\r\nGET- / HTTP/1.1\r\nHost: a\r\n\r\n", ()))
@example((b"GET / HTTP/1.1\r\nHost: a\r\n\r\nDE#L /x}HTTP/1.1\r\nHost: a\r\n\r\n", ()))
@example((b"GET / HTTP/1.1\r\nHost: a\r\n\r\nGE /a HTTP/1.1\r\nHost: a\r\n\r", ()))
# The same cut twice once made an empty piece, which the core reads as EOF (helper h1buf).
@example((PLAIN + b"get / HTTP/1.1\r\n\r\n", (62, 62)))
def test_native_and_reference_paths_agree(case: tuple[bytes, tuple[int, ...]]) -> None:
    data, cuts = case
    fast, reference = outcome(data, cuts), outcome(data, cuts, native_path=False)
    assert same_answer(fast, reference), (fast, reference)


def same_answer(fast: object, reference: object) -> bool:
    """The two paths' results for one input are equal, or differ only where the reference
    path is known to be weaker: a request pipelined in the same read after one llhttp
    parsed. llhttp gives no offsets, so the core cannot look at that request's method
    first, and the reference path answers whatever llhttp says of it (400, or 501 for a
    method llhttp does not know). After a head the native parser took, the core knows
    where the next request starts and judges it as it judges a first one: a method that
    is a token is taken (RFC 9110 §9.1), and what follows is judged as in a first request."""
    assert isinstance(fast, list) and isinstance(reference, list)
    if fast == reference:
        return True
    *before, last = reference
    if not (before and isinstance(before[-1], EndOfMessage) and isinstance(last, tuple)):
        return False
    if fast[: len(before)] != before:
        return False
    if len(fast) == len(before):  # its head is still incomplete: the core waits for more
        return last[2] in METHOD_ERRORS
    following = fast[len(before)]
    if isinstance(following, tuple):  # an error too: the same, or the first-request one
        return bool(following[1] == last[1] or last[2] in METHOD_ERRORS)
    return isinstance(following, Request) and following.method.encode() not in KNOWN_METHODS


def test_a_custom_method_pipelined_after_a_plain_head_is_served() -> None:
    data = PLAIN + b"MKFOO /x HTTP/1.1\r\nHost: a\r\n\r\n"
    result = outcome(data)
    assert isinstance(result, list)
    if parse_head is not None:
        assert [e.method for e in result if isinstance(e, Request)] == ["GET", "MKFOO"]
    assert outcome(data, native_path=False)[-1] == ("error", 501, "method not implemented here")


# -- no leaks -----------------------------------------------------------------------------


@needs_native
def test_parsing_leaks_nothing() -> None:
    """Every object the C code makes is owned by the result or freed (refcounts)."""
    assert parse_head is not None
    heads = [PLAIN, PLAIN[:-3], b"GET / HTTP/1.1\r\nHost: a\r\nX: \xe9\r\n\r\n"]

    def run(n: int) -> None:
        for _ in range(n):
            for data in heads:
                parse_head(data, 0, 8190, 8190, 100)

    run(1000)
    tracemalloc.start()
    try:
        run(20000)
        first = tracemalloc.get_traced_memory()[0]
        run(20000)
        second = tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()
    assert second - first < 64 * 1024  # a leak of one tuple per call would be ~MBs


@needs_native
def test_wrong_arguments_raise_instead_of_crashing() -> None:
    assert parse_head is not None
    with pytest.raises(TypeError):
        parse_head("GET / HTTP/1.1\r\n\r\n", 0, 1, 1, 1)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        parse_head(PLAIN, 0, 1)  # type: ignore[call-arg]
    assert parse_head(PLAIN, len(PLAIN), 8190, 8190, 100) is None
    assert parse_head(PLAIN, -1, 8190, 8190, 100) is None
