"""HTTP/1.1 bodies read into the worker's body buffers (worker/h1body.py), in memory: a
buffer is never written while a piece of it is unread, reads stop at the body's end, and
the connection takes its transport back for the next request's head."""

from __future__ import annotations

import asyncio
import gc
from typing import Any

import pytest

from preforkd.proto.events import Data, EndOfMessage, Request
from preforkd.proto.h1 import H1Connection
from preforkd.proto.h1_body import VIEW_MIN
from preforkd.worker import h1body
from preforkd.worker.connection import H1Protocol
from preforkd.worker.h1body import BODY_READ_MIN, BodyBuffers, BodyReader, _unshared
from preforkd.wsgi.input import InputStream

from .test_connection import FakeTransport, Harness, run

HEAD = b"POST /up HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n"


class Conn:
    """What a BodyReader calls back: keeps every piece, like an app that has not read."""

    def __init__(self, remaining: int) -> None:
        self.parser = H1Connection()
        self.parser.receive_data(HEAD % remaining)
        assert self.parser.body_remaining == remaining
        self.pieces: list[bytes | memoryview] = []
        self.closed = False

    def body_received(self, data: bytes | memoryview) -> None:
        self.parser.receive_body(data)
        self.pieces.append(data)

    def data_received(self, data: bytes) -> None:
        raise AssertionError("no read should bypass the body buffers here")

    def buffered_read_done(self, body_ended: bool) -> None:
        pass

    def eof_received(self) -> bool:
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        pass

    def pause_writing(self) -> None:
        pass

    def resume_writing(self) -> None:
        pass


def read_into(reader: BodyReader, data: bytes) -> int:
    """What a transport does: one read into the buffer get_buffer lends."""
    buf = reader.get_buffer(-1)
    n = min(len(buf), len(data))
    buf[:n] = data[:n]
    del buf  # the transport lets go of its view before buffer_updated returns
    reader.buffer_updated(n)
    return n


def pattern(n: int, seed: int) -> bytes:
    return bytes((i * 7 + seed) & 0xFF for i in range(n))


def test_a_buffer_with_an_unread_piece_is_not_handed_out_again() -> None:
    pool = BodyBuffers(size=4096)
    slot = pool.acquire()
    view = memoryview(slot.buf)[10:20]
    assert not _unshared(slot)
    pool.release(slot)
    assert pool.idle == 0  # held, not free
    other = pool.acquire()
    assert other is not slot
    pool.release(other)
    del view
    gc.collect()
    assert pool.acquire() in (slot, other)
    assert pool.acquire() in (slot, other)  # both came back once unshared


def test_a_slice_of_a_piece_keeps_its_buffer_busy() -> None:
    pool = BodyBuffers(size=4096)
    slot = pool.acquire()
    piece = memoryview(slot.buf)[0:100]
    rest = piece[50:]  # what wsgi.input keeps after a partial read
    del piece
    assert not _unshared(slot)
    del rest
    assert _unshared(slot)


def test_reads_never_overwrite_unread_pieces() -> None:
    conn = Conn(1_000_000)
    pool = BodyBuffers(size=64 * 1024)
    reader = BodyReader(conn, pool)
    sent = pattern(1_000_000, 3)
    pos = 0
    while pos < len(sent):
        pos += read_into(reader, sent[pos : pos + 30_000])
    # Nothing was read by the "app": every piece is intact and they add up to the body.
    assert b"".join(conn.pieces) == sent
    assert conn.parser.body_remaining == 0


def test_a_buffer_read_by_the_app_is_written_again_from_its_front() -> None:
    conn = Conn(200_000)
    reader = BodyReader(conn, BodyBuffers())
    size = VIEW_MIN
    read_into(reader, b"a" * size)
    first = conn.pieces.pop()
    assert isinstance(first, memoryview)
    buf_a = reader.get_buffer(-1)
    assert buf_a.obj is first.obj  # (the same buffer, after the unread piece)
    del buf_a
    read_into(reader, b"b" * size)
    assert bytes(first) == b"a" * size  # still unread: not overwritten
    conn.pieces.clear()
    del first
    read_into(reader, b"c" * size)
    piece = conn.pieces[-1]
    # Everything read: the next read went to the front of the same buffer.
    assert isinstance(piece, memoryview) and piece.obj is not None
    assert bytes(piece.obj[:size]) == b"c" * size


def test_a_short_read_is_copied_and_its_room_reused() -> None:
    conn = Conn(200_000)
    reader = BodyReader(conn, BodyBuffers())
    kept = []
    for byte in b"xyz":
        read_into(reader, bytes([byte]) * 100)
        kept.append(conn.pieces[-1])
    assert kept == [b"x" * 100, b"y" * 100, b"z" * 100]
    assert all(type(piece) is bytes for piece in kept)
    view = reader.get_buffer(-1)  # still the front: short reads pin nothing
    assert view.obj is not None and bytes(view.obj[:100]) == b"z" * 100
    assert len(view) == 200_000 - 300


def test_reads_stop_at_the_end_of_the_body() -> None:
    conn = Conn(70_000)
    reader = BodyReader(conn, BodyBuffers())
    assert len(reader.get_buffer(-1)) == 70_000
    read_into(reader, b"x" * 69_999)
    assert len(reader.get_buffer(-1)) == 1


class SwitchingTransport(FakeTransport):
    """A transport that, like asyncio's and uvloop's, reads through data_received or
    into get_buffer depending on the protocol it has at the time."""

    def __init__(self) -> None:
        super().__init__()
        self.protocol: Any = None
        self.switches = 0

    def set_protocol(self, protocol: asyncio.BaseProtocol) -> None:
        self.protocol = protocol
        self.switches += 1

    def get_protocol(self) -> asyncio.BaseProtocol:
        return self.protocol  # type: ignore[no-any-return]

    def receive(self, data: bytes) -> int:
        """Deliver what the peer sent in as many reads as the protocol takes, while
        reading is not paused; returns how much was delivered."""
        total = len(data)
        while data and self.reading:
            protocol = self.protocol
            if isinstance(protocol, asyncio.BufferedProtocol):
                buf = protocol.get_buffer(-1)
                n = min(len(buf), len(data))
                buf[:n] = data[:n]
                del buf
                protocol.buffer_updated(n)
                data = data[n:]
            else:
                protocol.data_received(data)
                data = b""
        return total - len(data)


async def send(h: Harness, stream: bytes) -> None:
    """The client sends ``stream`` as fast as the server reads: whenever reading is
    paused, it waits (within the harness's deadline) until it resumes."""
    transport = h.transport
    assert isinstance(transport, SwitchingTransport)
    pos = 0
    while pos < len(stream):
        await h.until(lambda: transport.reading)
        pos += transport.receive(stream[pos : pos + 100_000])


def switching_harness(loop: asyncio.AbstractEventLoop, app: Any, **kw: Any) -> Harness:
    harness = Harness(loop, app, **kw)
    transport = SwitchingTransport()
    harness.transport = transport
    harness.proto = H1Protocol(harness.state)
    transport.protocol = harness.proto
    harness.proto.connection_made(transport)
    return harness


def echo_app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
    stream = environ["wsgi.input"]
    body = b""
    while chunk := stream.read(65536):
        assert type(chunk) is bytes
        body += chunk
    start_response("200 OK", [("Content-Length", str(len(body)))])
    return [body]


@pytest.mark.parametrize("size", [BODY_READ_MIN - 1, BODY_READ_MIN + 1, 1_000_003])
def test_upload_then_pipelined_request_through_the_body_buffers(size: int) -> None:
    body = pattern(size, 11)
    second = HEAD % 5 + b"after"  # pipelined right after the body

    async def main(loop: asyncio.AbstractEventLoop) -> None:
        h = switching_harness(loop, echo_app, body_buffer=256 * 1024)
        transport = h.transport
        assert isinstance(transport, SwitchingTransport)
        await send(h, HEAD % size + body + second)
        await h.until(lambda: transport.data.count(b"HTTP/1.1 200") == 2)
        response = bytes(transport.data)
        assert body in response and response.endswith(b"\r\n\r\nafter")
        assert h.proto._body_reader is None
        # Back to the H1Protocol for heads; a body long enough went through the reader.
        assert transport.protocol is h.proto
        # (Bodies that fit the first read are not worth a switch.)
        assert transport.switches == (2 if size > 100_000 else 0)

    run(main)


def test_without_reference_counts_to_trust_bodies_arrive_as_bytes(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Off CPython the buffers are not used (their recycling reads reference counts): an
    upload then goes through data_received, and arrives whole all the same."""
    monkeypatch.setattr(h1body, "ENABLED", False)
    size = 1_000_003
    body = pattern(size, 5)

    async def main(loop: asyncio.AbstractEventLoop) -> None:
        h = switching_harness(loop, echo_app, body_buffer=256 * 1024)
        transport = h.transport
        assert isinstance(transport, SwitchingTransport)
        await send(h, HEAD % size + body)
        await h.until(lambda: b"HTTP/1.1 200" in transport.data)
        assert bytes(transport.data).endswith(b"\r\n\r\n" + body)
        assert transport.switches == 0 and h.proto._body_reader is None

    run(main)


def test_body_pieces_are_views_until_read_and_bytes_after() -> None:
    stream = InputStream(lambda fn: fn(), lambda n: None, high_water=1 << 20, windowed=False)
    buf = bytearray(b"line one\nline two\nrest")
    stream.feed(memoryview(buf)[0:12])
    stream.feed(memoryview(buf)[12:])
    stream.feed_eof()
    assert stream.readline() == b"line one\n"
    assert stream.read(4) == b"line"
    assert stream.read() == b" two\nrest"


def test_core_receive_body_checks_its_caller() -> None:
    parser = H1Connection()
    with pytest.raises(Exception, match="receive_body"):
        parser.receive_body(memoryview(b"x"))
    events = parser.receive_data(HEAD % 5)
    assert isinstance(events[0], Request)
    with pytest.raises(Exception, match="receive_body"):
        parser.receive_body(memoryview(b"123456"))
    first = parser.receive_body(memoryview(b"12"))
    assert len(first) == 1 and isinstance(first[0], Data)
    last = parser.receive_body(memoryview(b"345"))
    assert isinstance(last[0], Data) and isinstance(last[1], EndOfMessage)
    assert parser.body_remaining == 0
    events = parser.receive_data(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    assert isinstance(events[0], Request) and events[0].target == "/"


def test_idle_buffers_are_let_go_once_uploads_stop() -> None:
    pool = BodyBuffers(size=4096)
    slots = [pool.acquire() for _ in range(4)]
    kept = memoryview(slots[0].buf)  # an unread piece: given back, but held
    for slot in slots:
        pool.release(slot)
    assert pool.idle == 3
    pool.trim()  # buffers were acquired since the last tick: none let go
    assert pool.idle == 3
    del kept
    pool.trim()  # the held one is idle now; no upload since the last tick: half go
    assert pool.idle == 2
    pool.trim()
    pool.trim()
    assert pool.idle == 0


def test_uploads_in_a_row_stay_in_the_body_buffers() -> None:
    """After an upload the next head is read into a body buffer too (its body left in
    place, no switch of protocol); a request without a long body switches back."""
    bodies = [pattern(300_000, 1), pattern(200_000, 2), b"small"]

    async def main(loop: asyncio.AbstractEventLoop) -> None:
        h = switching_harness(loop, echo_app, body_buffer=256 * 1024)
        transport = h.transport
        assert isinstance(transport, SwitchingTransport)
        for count, body in enumerate(bodies, 1):
            await send(h, HEAD % len(body) + body)
            await h.until(lambda n=count: transport.data.count(b"HTTP/1.1 200") == n)
            assert bytes(transport.data).endswith(body)
            if count < 3:
                assert isinstance(transport.protocol, BodyReader)
                assert transport.switches == 1
        assert transport.protocol is h.proto and transport.switches == 2
        assert h.proto._body_reader is None

    run(main)
