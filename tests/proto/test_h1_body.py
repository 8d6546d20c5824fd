"""The body framings of proto/h1_body.py on their own: however a body is cut into reads,
the pieces add up to the body, the bytes after it come back whole, and a read that is all
body is passed on as the very object received (no copy)."""

from __future__ import annotations

import pytest

from preforkd.errors import RemoteProtocolError
from preforkd.proto.events import Data, EndOfMessage, Event
from preforkd.proto.h1_body import ChunkedBody, LengthBody

BODY = bytes(range(256)) * 40  # 10240 bytes
AFTER = b"GET /next HTTP/1.1\r\n\r\n"


def _feed_in_cuts(
    body: LengthBody | ChunkedBody, stream: bytes, start: int, size: int
) -> tuple[list[Event], bytes | None]:
    """Feed ``stream[start:]`` in reads of ``size`` bytes (the first read from offset 0,
    with ``start`` as the offset into it, as after a head); stop once the body is done."""
    events: list[Event] = []
    first = stream[: start + size]
    rest = body.feed(first, start, events)
    pos = start + size
    while rest is None and pos < len(stream):
        rest = body.feed(stream[pos : pos + size], 0, events)
        pos += size
    if rest is not None and pos < len(stream):
        rest += stream[pos:]
    return events, rest


def _body_of(events: list[Event]) -> bytes:
    assert all(isinstance(e, Data) for e in events[:-1])
    return b"".join(e.data for e in events if isinstance(e, Data))


@pytest.mark.parametrize("size", [1, 7, 1000, 4096, 10240, 10241, 20000])
@pytest.mark.parametrize("start", [0, 5])
def test_length_body_any_cut(size: int, start: int) -> None:
    stream = b"H" * start + BODY + AFTER
    length = LengthBody()
    length.start(len(BODY))
    events, rest = _feed_in_cuts(length, stream, start, size)
    assert isinstance(events[-1], EndOfMessage)
    assert _body_of(events) == BODY
    assert rest == AFTER
    assert length.remaining == 0


def test_length_body_passes_a_read_of_body_on_as_is() -> None:
    length = LengthBody()
    length.start(100)
    events: list[Event] = []
    read = bytes(40)
    assert length.feed(read, 0, events) is None
    assert len(events) == 1 and isinstance(events[0], Data) and events[0].data is read
    assert length.remaining == 60


def test_length_body_head_ending_its_read_gives_no_event() -> None:
    length = LengthBody()
    length.start(10)
    events: list[Event] = []
    assert length.feed(b"head", 4, events) is None
    assert events == [] and length.remaining == 10


def test_length_body_ending_exactly_with_the_read() -> None:
    length = LengthBody()
    length.start(3)
    events: list[Event] = []
    read = b"abc"
    assert length.feed(read, 0, events) == b""
    assert isinstance(events[0], Data) and events[0].data is read
    assert isinstance(events[1], EndOfMessage)


def _chunked(body: bytes, piece: int) -> bytes:
    out = b""
    for i in range(0, len(body), piece):
        part = body[i : i + piece]
        out += b"%x ; ext = 1\r\n" % len(part) + part + b"\r\n"
    return out + b"0\r\nTrailer: x\r\n\r\n"


@pytest.mark.parametrize("size", [1, 13, 999, 4096, 50000])
@pytest.mark.parametrize("start", [0, 3])
def test_chunked_body_any_cut(size: int, start: int) -> None:
    stream = b"H" * start + _chunked(BODY, 3000) + AFTER
    events, rest = _feed_in_cuts(ChunkedBody(8190, 100, 8190), stream, start, size)
    assert isinstance(events[-1], EndOfMessage)
    assert _body_of(events) == BODY
    assert rest == AFTER


@pytest.mark.parametrize(
    "bad", [b"5\r\nabcdeXX", b"zz\r\n", b"5\nabcde\r\n", b"0\r\nbad field\r\n\r\n"]
)
def test_chunked_body_rejects_malformed(bad: bytes) -> None:
    with pytest.raises(RemoteProtocolError) as info:
        ChunkedBody(8190, 100, 8190).feed(bad, 0, [])
    assert info.value.status == 400


def test_chunked_body_limits_a_size_line() -> None:
    body = ChunkedBody(16, 100, 8190)
    with pytest.raises(RemoteProtocolError):
        body.feed(b"5;" + b"a" * 64, 0, [])
