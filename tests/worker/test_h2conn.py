"""The HTTP/2 adapter with an in-memory transport, the h2 library as the client, and a
controllable clock: stream lifecycle, backpressure, resets, lost connections, deadlines
and the graceful drain (RFC 9113 §6.8)."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import h2.config
import h2.connection
import h2.errors
import h2.events
import h2.settings

from preforkd.proto.h2 import H2Settings
from preforkd.worker.h2conn import SHUTDOWN_ACK_TIMEOUT, STREAM_HIGH_WATER, H2Protocol
from preforkd.worker.pool import AppThreads
from preforkd.worker.state import WorkerState
from preforkd.wsgi.environ import ConnectionInfo, ProxyTrust, environ_template
from tests.worker.test_connection import FakeTransport, run, settings

App = Callable[[dict[str, Any], Any], Any]


class H2Transport(FakeTransport):
    """FakeTransport that can half-close and counts aborts."""

    def __init__(self) -> None:
        super().__init__()
        self.eof_written = False
        self.aborted = False

    def can_write_eof(self) -> bool:
        return True

    def write_eof(self) -> None:
        assert not self.closed, "write_eof after close"
        self.eof_written = True

    def abort(self) -> None:
        self.aborted = True
        self.closed = True


@dataclass
class Response:
    status: int | None = None
    body: bytearray = field(default_factory=bytearray, repr=False)
    ended: bool = False
    reset: int | None = None

    def __repr__(self) -> str:
        return f"Response({self.status}, {len(self.body)} bytes, {self.ended=}, {self.reset=})"


def hello(environ: dict[str, Any], start_response: Any) -> list[bytes]:
    start_response("200 OK", [("content-type", "text/plain")])
    return [environ["PATH_INFO"].encode()]


class Harness:
    """One H2Protocol on a fake transport, driven by an h2 client connection."""

    def __init__(
        self, loop: asyncio.AbstractEventLoop, app: App, *, draining: bool = False, **kw: Any
    ) -> None:
        self.state = WorkerState(
            app=app,
            settings=settings(h2=kw.pop("h2", H2Settings()), **kw),
            executor=AppThreads(8),
            proxy=ProxyTrust([]),
            call_soon_threadsafe=loop.call_soon_threadsafe,
        )
        self.state.draining = draining
        info = ConnectionInfo("127.0.0.1", "8000", "10.0.0.1", "4242", "http", False)
        self.transport = H2Transport()
        self.proto = H2Protocol(self.state, "http", info, environ_template(info))
        self.client = h2.connection.H2Connection(
            h2.config.H2Configuration(client_side=True, header_encoding="utf-8")
        )
        self.responses: dict[int, Response] = {}
        self.goaways: list[h2.events.ConnectionTerminated] = []
        self.pings: list[h2.events.PingReceived] = []
        self._seen = 0
        self._unacked: list[tuple[int, int]] = []  # DATA not yet acknowledged (sid, length)
        self.proto.adopt(self.transport)

    # --- client side ----------------------------------------------------------------------
    def open(self, initial: bytes = b"") -> None:
        """The client's preface (and ``initial``, e.g. its first requests) in one read."""
        self.client.initiate_connection()
        self.proto.start(self.client.data_to_send() + initial)

    def request_bytes(self, path: str, body: bytes | None = None) -> tuple[int, bytes]:
        sid = self.client.get_next_available_stream_id()
        headers = [(":method", "POST" if body is not None else "GET"), (":path", path),
                   (":scheme", "http"), (":authority", "a")]  # fmt: skip
        self.client.send_headers(sid, headers, end_stream=body is None)
        if body is not None:
            self.client.send_data(sid, body, end_stream=True)
        self.responses[sid] = Response()
        return sid, self.client.data_to_send()

    def request(self, path: str, body: bytes | None = None) -> int:
        sid, data = self.request_bytes(path, body)
        self.proto.data_received(data)
        return sid

    def flush_client(self) -> None:
        data = self.client.data_to_send()
        if data:
            self.proto.data_received(data)

    def pump(self, ack: bool = True) -> None:
        """Feed the server's new output to the client (acknowledging DATA if ``ack``)."""
        data = bytes(self.transport.data[self._seen :])
        self._seen = len(self.transport.data)
        for event in self.client.receive_data(data) if data else ():
            self._on_event(event)
        if ack and self._unacked:
            for sid, length in self._unacked:
                if sid not in self.client.streams or not self.client.streams[sid].closed:
                    self.client.acknowledge_received_data(length, sid)
            self._unacked.clear()
        if ack:
            self.flush_client()

    def _on_event(self, event: h2.events.Event) -> None:
        if isinstance(event, h2.events.ResponseReceived):
            status = dict(event.headers)[":status"]
            if not status.startswith("1"):
                self.responses[event.stream_id].status = int(status)
        elif isinstance(event, h2.events.DataReceived):
            self.responses[event.stream_id].body += event.data
            self._unacked.append((event.stream_id, event.flow_controlled_length))
        elif isinstance(event, h2.events.StreamEnded):
            self.responses[event.stream_id].ended = True
        elif isinstance(event, h2.events.StreamReset):
            self.responses[event.stream_id].reset = event.error_code
        elif isinstance(event, h2.events.ConnectionTerminated):
            self.goaways.append(event)
        elif isinstance(event, h2.events.PingReceived):
            self.pings.append(event)

    async def until(
        self, condition: Callable[[], object], timeout: float = 5.0, ack: bool = True
    ) -> None:
        """Pump the client until ``condition`` holds (a deadline loop, never a sleep)."""
        deadline = time.monotonic() + timeout
        while True:
            self.pump(ack)
            if condition():
                return
            if time.monotonic() > deadline:
                raise TimeoutError(f"condition not met; responses {self.responses}")
            await asyncio.sleep(0.001)  # yields to the loop so handoffs and flushes run

    def done(self, sid: int) -> bool:
        return self.responses[sid].ended or self.responses[sid].reset is not None


# --- stream lifecycle ---------------------------------------------------------------------


def test_streams_on_one_connection_are_answered_and_counted() -> None:
    async def scenario(loop: asyncio.AbstractEventLoop) -> None:
        h = Harness(loop, hello)
        h.open()
        sids = [h.request(f"/{i}") for i in range(5)]
        await h.until(lambda: all(h.done(s) for s in sids))
        for i, sid in enumerate(sids):
            assert h.responses[sid].status == 200
            assert bytes(h.responses[sid].body) == f"/{i}".encode()
        assert h.state.requests_served == 5
        assert not h.proto.streams, "finished streams leave the adapter's table"
        await h.until(lambda: h.state.in_flight == 0)

    run(scenario)


def test_request_body_reaches_the_app_and_the_window_reopens() -> None:
    def echo_length(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        body = environ["wsgi.input"].read()
        start_response("200 OK", [])
        return [str(len(body)).encode()]

    async def scenario(loop: asyncio.AbstractEventLoop) -> None:
        h = Harness(loop, echo_length)
        h.open()
        # Larger than the client's default 65,535-byte window: it gets through only if
        # the server reopens the window as the app reads (WINDOW_UPDATE).
        sid = h.client.get_next_available_stream_id()
        h.client.send_headers(sid, [(":method", "POST"), (":path", "/"), (":scheme", "http"),
                                    (":authority", "a")])  # fmt: skip
        h.responses[sid] = Response()
        payload, sent = b"x" * 200_000, 0
        deadline = time.monotonic() + 5
        while sent < len(payload):
            window = min(h.client.local_flow_control_window(sid), 16384)
            if window:
                h.client.send_data(sid, payload[sent : sent + window])
                sent += window
            h.flush_client()
            h.pump()
            assert time.monotonic() < deadline, f"window stayed shut after {sent} bytes"
            await asyncio.sleep(0.001)
        h.client.end_stream(sid)
        h.flush_client()
        await h.until(lambda: h.done(sid))
        assert bytes(h.responses[sid].body) == b"200000"

    run(scenario)


def test_readers_waiting_for_big_reads_do_not_hold_the_shared_connection_window() -> None:
    """A reader is woken only when its read can return, unless the windows keep the rest
    from coming: here another stream's unread body shuts the connection window under a
    reader that holds part of what it asked for. That reader must be woken to consume
    it (which reopens the window), or both streams wait forever."""
    release = threading.Event()

    def reader(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        stream, total = environ["wsgi.input"], 0
        if environ["PATH_INFO"] == "/slow":
            release.wait(10)  # reads nothing until the other stream is answered
        while chunk := stream.read(65536):  # more than a window: waits for a full read
            total += len(chunk)
        start_response("200 OK", [])
        return [str(total).encode()]

    async def scenario(loop: asyncio.AbstractEventLoop) -> None:
        windows = H2Settings(initial_window_size=65535, connection_window_size=65535)
        h = Harness(loop, reader, h2=windows)
        h.open()
        h.pump()
        head = [(":method", "POST"), (":scheme", "http"), (":authority", "a")]
        fast = h.client.get_next_available_stream_id()
        h.client.send_headers(fast, [*head, (":path", "/fast")])
        h.client.send_data(fast, b"f" * 16384)  # buffered: less than the read asks for
        h.client.send_data(fast, b"f" * 3616)
        h.responses[fast] = Response()
        h.flush_client()
        # The reader waits for more (its report that it does has been handled).
        await h.until(lambda: fast in h.proto.streams and h.proto.streams[fast].input.demanded)
        await asyncio.sleep(0)
        slow = h.client.get_next_available_stream_id()
        h.client.send_headers(slow, [*head, (":path", "/slow")])
        h.client.send_data(slow, b"s" * 16384)
        h.client.send_data(slow, b"s" * 16384)
        h.client.send_data(slow, b"s" * 12767)  # the connection window is now shut
        h.responses[slow] = Response()
        h.flush_client()  # another read: only the slow stream is fed
        sent, size = 20000, 200_000
        deadline = time.monotonic() + 5
        while sent < size:
            h.pump()
            window = min(h.client.local_flow_control_window(fast), 16384, size - sent)
            if window:
                h.client.send_data(fast, b"f" * window, end_stream=sent + window == size)
                sent += window
                h.flush_client()
            assert time.monotonic() < deadline, f"the windows stayed shut after {sent} bytes"
            await asyncio.sleep(0.001)
        await h.until(lambda: h.done(fast))
        assert bytes(h.responses[fast].body) == b"200000"
        release.set()
        h.client.end_stream(slow)
        h.flush_client()
        await h.until(lambda: h.done(slow))
        assert bytes(h.responses[slow].body) == b"45535"

    run(scenario)


def test_app_error_before_the_head_answers_500_and_the_connection_lives() -> None:
    def broken(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        if environ["PATH_INFO"] == "/boom":
            raise RuntimeError("boom")
        return hello(environ, start_response)

    async def scenario(loop: asyncio.AbstractEventLoop) -> None:
        h = Harness(loop, broken)
        h.open()
        bad, good = h.request("/boom"), h.request("/ok")
        await h.until(lambda: h.done(bad) and h.done(good))
        assert h.responses[bad].status == 500
        assert h.responses[good].status == 200 and bytes(h.responses[good].body) == b"/ok"
        assert not h.transport.closed

    run(scenario)


# --- backpressure ---------------------------------------------------------------------------


def test_app_writes_wait_while_the_stream_window_is_shut() -> None:
    produced: list[int] = []

    def big(environ: dict[str, Any], start_response: Any) -> Iterator[bytes]:
        start_response("200 OK", [])
        for i in range(20):
            produced.append(i)
            yield b"d" * 16384

    async def scenario(loop: asyncio.AbstractEventLoop) -> None:
        h = Harness(loop, big)
        h.open()
        sid = h.request("/")
        # The client does not acknowledge DATA: after its 65,535-byte window, output queues
        # in the core, and the app waits once STREAM_HIGH_WATER is queued.
        deadline = time.monotonic() + 5
        while len(produced) < 4 and time.monotonic() < deadline:
            h.pump(ack=False)
            await asyncio.sleep(0.001)
        limit = (65535 + STREAM_HIGH_WATER) // 16384 + 2
        for _ in range(50):
            await asyncio.sleep(0.001)
        h.pump(ack=False)
        assert 4 <= len(produced) <= limit, f"the app ran on: {len(produced)} chunks"
        assert not h.done(sid)
        await h.until(lambda: h.done(sid))  # acknowledging reopens the window
        assert len(h.responses[sid].body) == 20 * 16384 and len(produced) == 20

    run(scenario)


def test_paused_transport_blocks_writers_and_pauses_reading() -> None:
    produced: list[int] = []

    def chunks(environ: dict[str, Any], start_response: Any) -> Iterator[bytes]:
        start_response("200 OK", [])
        for i in range(3):
            produced.append(i)
            yield b"c" * 10

    async def scenario(loop: asyncio.AbstractEventLoop) -> None:
        h = Harness(loop, chunks)
        h.open()
        h.proto.pause_writing()  # the transport is over its high-water mark
        assert not h.transport.reading, "a client that does not read cannot make us queue"
        sid = h.request("/")
        await h.until(lambda: produced == [0], ack=False)
        for _ in range(50):
            await asyncio.sleep(0.001)
        assert produced == [0], "the app waits while the transport is paused"
        h.proto.resume_writing()
        assert h.transport.reading
        await h.until(lambda: h.done(sid))
        assert bytes(h.responses[sid].body) == b"c" * 30

    run(scenario)


def test_client_that_takes_no_data_is_aborted_after_send_timeout() -> None:
    async def scenario(loop: asyncio.AbstractEventLoop) -> None:
        h = Harness(loop, hello, send_timeout=10.0, keep_alive=60.0)
        h.open()
        h.proto.pause_writing()
        now = h.state.clock()
        h.proto.check_deadline(now + 9)
        assert not h.transport.aborted
        h.proto.check_deadline(now + 11)
        assert h.transport.aborted

    run(scenario)


def test_stream_whose_window_stays_shut_is_reset_after_send_timeout() -> None:
    def endless(environ: dict[str, Any], start_response: Any) -> Iterator[bytes]:
        start_response("200 OK", [])
        while True:
            yield b"e" * 16384

    async def scenario(loop: asyncio.AbstractEventLoop) -> None:
        h = Harness(loop, endless, send_timeout=10.0, keep_alive=60.0)
        h.open()
        sid = h.request("/")
        await h.until(lambda: len(h.responses[sid].body) >= 65535, ack=False)
        now = h.state.clock()
        h.proto.check_deadline(now)  # marks when the stream stopped making progress
        h.proto.check_deadline(now + 11)
        await h.until(lambda: h.responses[sid].reset is not None, ack=False)
        assert h.responses[sid].reset == h2.errors.ErrorCodes.CANCEL
        await h.until(lambda: h.state.in_flight == 0, ack=False)  # its next write failed
        assert not h.transport.closed, "only the stream ends"

    run(scenario)


# --- resets and lost connections ------------------------------------------------------------


def test_client_reset_mid_response_stops_the_app_and_closes_its_iterable() -> None:
    closed = threading.Event()

    class Endless:
        def __iter__(self) -> Iterator[bytes]:
            while True:
                yield b"data"

        def close(self) -> None:
            closed.set()

    def app(environ: dict[str, Any], start_response: Any) -> Endless | list[bytes]:
        if environ["PATH_INFO"] == "/other":
            return hello(environ, start_response)
        start_response("200 OK", [])
        return Endless()

    async def scenario(loop: asyncio.AbstractEventLoop) -> None:
        h = Harness(loop, app)
        h.open()
        sid = h.request("/")
        other = h.request("/other")
        await h.until(lambda: len(h.responses[sid].body) > 0)
        h.client.reset_stream(sid, h2.errors.ErrorCodes.CANCEL)
        h.flush_client()
        await h.until(closed.is_set)
        await h.until(lambda: h.state.in_flight == 0)
        assert not h.transport.closed, "a reset ends one stream, not the connection"
        assert sid not in h.proto.streams and other not in h.proto.streams

    run(scenario)


def test_reset_of_a_stream_whose_app_reads_its_body_fails_the_read() -> None:
    errors: list[BaseException] = []

    def reader(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        try:
            environ["wsgi.input"].read()
        except Exception as exc:
            errors.append(exc)
            raise
        start_response("200 OK", [])
        return [b"unreachable"]

    async def scenario(loop: asyncio.AbstractEventLoop) -> None:
        h = Harness(loop, reader)
        h.open()
        sid = h.client.get_next_available_stream_id()
        h.client.send_headers(sid, [(":method", "POST"), (":path", "/"), (":scheme", "http"),
                                    (":authority", "a")])  # fmt: skip
        h.client.send_data(sid, b"partial")
        h.responses[sid] = Response()
        h.flush_client()
        h.client.reset_stream(sid, h2.errors.ErrorCodes.CANCEL)
        h.flush_client()
        await h.until(lambda: h.state.in_flight == 0)
        assert errors, "the app's read must fail, not wait forever"

    run(scenario)


def test_connection_lost_with_streams_in_flight_releases_every_app_thread() -> None:
    started = threading.Semaphore(0)

    def endless(environ: dict[str, Any], start_response: Any) -> Iterator[bytes]:
        start_response("200 OK", [])
        started.release()
        while True:
            yield b"z" * 16384

    async def scenario(loop: asyncio.AbstractEventLoop) -> None:
        h = Harness(loop, endless)
        h.open()
        for i in range(4):
            h.request(f"/{i}")
        await h.until(lambda: h.state.in_flight == 4 and len(h.transport.data) > 65535)
        h.proto.connection_lost(ConnectionResetError())
        await h.until(lambda: h.state.in_flight == 0)
        assert not h.proto.streams
        assert h not in h.state.connections and h.proto not in h.state.connections

    run(scenario)


# --- deadlines -------------------------------------------------------------------------------


def test_idle_connection_gets_goaway_after_keep_alive() -> None:
    async def scenario(loop: asyncio.AbstractEventLoop) -> None:
        h = Harness(loop, hello, keep_alive=5.0)
        h.open()
        sid = h.request("/")
        await h.until(lambda: h.done(sid))
        now = h.state.clock()
        h.proto.check_deadline(now + 4.5)
        h.pump()
        assert not h.goaways
        h.proto.check_deadline(now + 5.5)
        h.pump()
        assert [g.last_stream_id for g in h.goaways] == [sid]
        assert h.goaways[0].error_code == h2.errors.ErrorCodes.NO_ERROR

    run(scenario)


def test_silent_client_is_pinged_then_closed() -> None:
    gate = threading.Event()

    def slow(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        gate.wait(5)
        return hello(environ, start_response)

    async def scenario(loop: asyncio.AbstractEventLoop) -> None:
        h = Harness(loop, slow, h2_ping_interval=10.0)
        h.open()
        h.request("/")
        h.pump()
        now = h.state.clock()
        h.proto.check_deadline(now + 9)
        h.pump(ack=False)
        assert not h.pings
        h.proto.check_deadline(now + 11)  # silent for the interval: PING
        h.pump(ack=False)
        assert len(h.pings) == 1
        h.proto.check_deadline(now + 20)  # outstanding, not yet too long
        assert not h.transport.closed
        h.proto.check_deadline(now + 22)  # no answer for another interval
        assert h.transport.closed
        gate.set()
        await h.until(lambda: h.state.in_flight == 0)

    run(scenario)


def test_answered_ping_keeps_the_connection() -> None:
    gate = threading.Event()

    def slow(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        gate.wait(5)
        return hello(environ, start_response)

    async def scenario(loop: asyncio.AbstractEventLoop) -> None:
        h = Harness(loop, slow, h2_ping_interval=10.0)
        h.open()
        sid = h.request("/")
        h.pump()
        h.proto.check_deadline(h.state.clock() + 11)
        h.pump()  # the h2 client answers the PING
        assert len(h.pings) == 1
        h.proto.check_deadline(h.state.clock() + 5)
        assert not h.transport.closed
        gate.set()
        await h.until(lambda: h.done(sid))
        assert h.responses[sid].status == 200

    run(scenario)


# --- the graceful drain (RFC 9113 §6.8) ------------------------------------------------------


def test_drain_finishes_streams_in_flight_then_sends_the_final_goaway() -> None:
    gate = threading.Event()

    def slow(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        gate.wait(5)
        return hello(environ, start_response)

    async def scenario(loop: asyncio.AbstractEventLoop) -> None:
        h = Harness(loop, slow)
        h.open()
        sids = [h.request(f"/{i}") for i in range(3)]
        h.state.draining = True
        h.proto.drain()
        h.pump()
        # Held back while streams are in flight: h2-based clients (httpx) drop every
        # open stream on any GOAWAY.
        assert not h.goaways and not h.transport.closed
        gate.set()
        await h.until(lambda: h.goaways)
        assert all(h.responses[s].status == 200 and h.responses[s].ended for s in sids)
        assert h.goaways[-1].last_stream_id == max(sids)

    run(scenario)


def test_connection_accepted_while_draining_serves_the_streams_in_its_first_bytes() -> None:
    async def scenario(loop: asyncio.AbstractEventLoop) -> None:
        h = Harness(loop, hello, draining=True)
        sid, data = h.request_bytes("/first")
        h.client.initiate_connection()
        preface = h.client.data_to_send()
        # The preface and the first request arrive in the read that started HTTP/2.
        h.proto.start(preface + data)
        await h.until(lambda: h.goaways)
        assert h.responses[sid].status == 200, "the stream the client sent was dropped"
        assert h.goaways[-1].last_stream_id == sid

    run(scenario)


def test_final_goaway_is_followed_by_a_lingering_close_not_a_reset() -> None:
    """Closing a socket with unread bytes makes the kernel send RST, which can destroy the
    GOAWAY before the client reads it: the client then cannot tell which of its streams
    were processed. So the worker half-closes and reads until the client closes."""

    async def scenario(loop: asyncio.AbstractEventLoop) -> None:
        h = Harness(loop, hello)
        h.open()
        sid = h.request("/")
        await h.until(lambda: h.done(sid))
        h.state.draining = True
        h.proto.drain()
        h.pump()
        assert [g.last_stream_id for g in h.goaways] == [sid]
        assert h.transport.eof_written and not h.transport.closed
        # The client's request crossed the GOAWAY: read and dropped, no RST.
        # (raw: the h2 client sends nothing after a GOAWAY; HEADERS, stream 3, ":method GET")
        h.proto.data_received(b"\x00\x00\x01\x01\x05\x00\x00\x00\x03\x82")
        assert not h.transport.closed
        assert h.proto.eof_received() is False  # the client closed: the transport closes
        h.proto.connection_lost(None)
        assert h.proto not in h.state.connections

    run(scenario)


def test_lingering_close_ends_by_itself() -> None:
    async def scenario(loop: asyncio.AbstractEventLoop) -> None:
        h = Harness(loop, hello)
        h.open()
        h.state.draining = True
        h.proto.drain()
        h.pump()
        assert h.goaways and not h.transport.closed
        h.proto.check_deadline(h.state.clock() + 60)
        assert h.transport.closed

    run(scenario)


def test_drain_of_a_connection_that_never_goes_quiet_uses_the_two_step_goaway() -> None:
    gate = threading.Event()

    def slow(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        gate.wait(5)
        return hello(environ, start_response)

    async def scenario(loop: asyncio.AbstractEventLoop) -> None:
        h = Harness(loop, slow, graceful_timeout=30.0)
        h.open()
        first = h.request("/first")
        h.state.draining = True
        h.proto.drain()
        start = h.state.clock()
        h.proto.check_deadline(start + 14)
        h.pump()
        assert not h.goaways
        h.proto.check_deadline(start + 16)  # half the graceful timeout: GOAWAY 2^31-1 + PING
        data = bytes(h.transport.data[h._seen :])
        h._seen = len(h.transport.data)
        assert b"\x07\x00\x00\x00\x00\x00\x7f\xff\xff\xff" in data, "GOAWAY(2^31-1)"
        assert b"\x06\x00\x00\x00\x00\x00" in data, "and a PING"
        # The h2 client refuses every frame after a GOAWAY, so the rest is read raw. The
        # stream in flight is still served, and with no PING acknowledgement the final
        # GOAWAY names it once SHUTDOWN_ACK_TIMEOUT has passed.
        gate.set()
        deadline = time.monotonic() + 5
        while h.state.in_flight or first in h.proto.streams:
            assert time.monotonic() < deadline, "the stream in flight did not finish"
            await asyncio.sleep(0.001)
        h.proto.check_deadline(start + 15 + SHUTDOWN_ACK_TIMEOUT + 0.5)
        data = bytes(h.transport.data[h._seen :])
        assert b"\x07\x00\x00\x00\x00\x00\x00\x00\x00\x01\x00\x00\x00\x00" in data, (
            "the final GOAWAY names stream 1"
        )
        assert h.proto.core.done

    run(scenario)
