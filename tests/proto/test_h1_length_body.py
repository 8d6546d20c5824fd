"""Content-Length bodies that go on past the buffer holding their head are counted by the
core itself, not by llhttp (proto/h1.py _frame_length, _receive_length): the events must
be the same whoever frames the body, however the bytes are cut."""

from __future__ import annotations

import pytest

from preforkd.errors import RemoteProtocolError
from preforkd.proto.events import ConnectionClosed, Data, EndOfMessage, Request
from preforkd.proto.h1 import H1Connection, H1ProtocolError

from .h1_support import error_of, events_of, feed, merge_data

# With the native head parser and with llhttp alone (tests/proto/conftest.py).
pytestmark = pytest.mark.usefixtures("h1_head_parser")

HOST = b"Host: example.com\r\n"


def get(target: bytes) -> bytes:
    return b"GET " + target + b" HTTP/1.1\r\n" + HOST + b"\r\n"


def post(body: bytes, extra: bytes = b"", method: bytes = b"POST") -> bytes:
    length = b"Content-Length: %d\r\n" % len(body)
    return method + b" /p HTTP/1.1\r\n" + HOST + length + extra + b"\r\n" + body


def targets(events: list[object]) -> list[str]:
    return [e.target for e in events if isinstance(e, Request)]


# A body holding what would be a request head: counting from a wrong offset shows up as a
# different body or a different list of requests, not as a silent success.
BODY = b"GET /x HTTP/1.1\r\n\r\n" + bytes(range(256)) * 2
PIPELINE = get(b"/1") + post(BODY) + get(b"/3") + post(b"tiny") + get(b"/5")


def test_pipeline_reference_events() -> None:
    whole = events_of(PIPELINE)
    assert targets(whole) == ["/1", "/p", "/3", "/p", "/5"]
    assert Data(BODY) in whole and Data(b"tiny") in whole
    assert sum(isinstance(e, EndOfMessage) for e in whole) == 5


def test_split_once_at_every_offset() -> None:
    whole = events_of(PIPELINE)
    for cut in range(1, len(PIPELINE)):
        assert events_of(PIPELINE, splits=[cut]) == whole, cut


def test_split_twice_at_every_offset() -> None:
    # The head in one read and the body spread over two more, or the body's end and the
    # next head together: every pair of cuts around the first POST.
    data = get(b"/1") + post(b"0123456789abcdef") + get(b"/3")
    whole = events_of(data)
    for first in range(1, len(data)):
        for second in range(first + 1, len(data)):
            assert events_of(data, splits=[first, second]) == whole, (first, second)


def test_byte_by_byte() -> None:
    assert events_of(PIPELINE, splits=list(range(len(PIPELINE)))) == events_of(PIPELINE)


def test_a_read_that_is_all_body_is_passed_on_without_a_copy() -> None:
    conn = H1Connection()
    head = post(b"x" * 100_000)[:-100_000]
    events = conn.receive_data(head + b"x" * 10)
    assert [type(e) for e in events] == [Request, Data]
    piece = b"y" * 60_000
    (data,) = conn.receive_data(piece)
    assert isinstance(data, Data) and data.data is piece
    last = b"z" * (100_000 - 10 - 60_000)
    assert conn.receive_data(last) == [Data(last), EndOfMessage()]
    with pytest.raises(RemoteProtocolError):
        conn.receive_data(last)  # parsed as the next request's head: not a method


def test_body_end_and_next_request_in_one_read() -> None:
    conn = H1Connection()
    conn.receive_data(post(b"abcdef")[:-4])
    events = conn.receive_data(b"cdef" + get(b"/next"))
    assert events[:2] == [Data(b"cdef"), EndOfMessage()]
    assert targets(events) == ["/next"]


def test_short_body_at_eof_is_an_error() -> None:
    conn = H1Connection()
    conn.receive_data(post(b"a" * 1000)[:-900])
    assert conn.receive_data(b"b" * 500) == [Data(b"b" * 500)]
    with pytest.raises(RemoteProtocolError) as info:
        conn.receive_data(b"")
    assert info.value.status == 400
    with pytest.raises(RemoteProtocolError):
        conn.receive_data(b"more")  # the error is sticky


def test_expect_continue_with_a_body_that_comes_later() -> None:
    conn = H1Connection()
    (request,) = conn.receive_data(post(b"abc", b"Expect: 100-continue\r\n")[:-3])
    assert isinstance(request, Request) and request.expect_continue
    assert conn.receive_data(b"ab") == [Data(b"ab")]
    assert conn.receive_data(b"c") == [Data(b"c"), EndOfMessage()]


def test_connection_close_ignores_what_follows_the_body() -> None:
    data = post(b"abcdef", b"Connection: close\r\n") + get(b"/ignored")
    for cut in range(1, len(data)):
        conn, events = feed(data, splits=[cut])
        assert targets(events) == ["/p"], cut
        assert merge_data(events)[1:] == [Data(b"abcdef"), EndOfMessage()], cut
        assert conn.receive_data(b"") == [ConnectionClosed()]


def test_http10_keep_alive_body_then_next_request() -> None:
    head = b"POST /p HTTP/1.0\r\nConnection: keep-alive\r\nContent-Length: 4\r\n\r\n"
    data = head + b"abcd" + get(b"/2")
    whole = events_of(data)
    assert targets(whole) == ["/p", "/2"]
    for cut in range(1, len(data)):
        assert events_of(data, splits=[cut]) == whole, cut


def test_method_llhttp_does_not_know_with_a_body() -> None:
    data = post(b"abcdef", method=b"FROB") + get(b"/2")
    whole = events_of(data)
    assert [e.method for e in whole if isinstance(e, Request)] == ["FROB", "GET"]
    for cut in range(1, len(data)):
        assert events_of(data, splits=[cut]) == whole, cut


def test_bad_request_after_a_body_carries_the_events_before_it() -> None:
    conn = H1Connection()
    conn.receive_data(post(b"abcdef")[:-3])
    with pytest.raises(H1ProtocolError) as info:
        conn.receive_data(b"def" + b"GET / HTTP/1.1\r\n\r\n")  # no Host
    assert info.value.status == 400
    assert info.value.events == [Data(b"def"), EndOfMessage()]


def test_pipelined_unknown_method_after_a_body_is_501() -> None:
    error = error_of(post(b"abcdef") + b"\x01FOO / HTTP/1.1\r\n\r\n", splits=[60])
    assert error.status in (400, 501)  # the same answer as without the cut:
    assert error.status == error_of(post(b"abcdef") + b"\x01FOO / HTTP/1.1\r\n\r\n").status


def test_header_limits_still_apply_to_the_next_head() -> None:
    # (The stall check counts reads that complete nothing, so the endless field starts
    # in a read of its own, as on main.)
    first = post(b"abcdef")
    data = first + b"GET / HTTP/1.1\r\nX: " + b"a" * 20_000
    for splits in ([50, len(first)], [50, len(first) + 5], [len(first) - 2, len(first) + 20]):
        assert error_of(data, splits=splits).status == 431, splits
