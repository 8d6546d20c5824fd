"""The HTTP/1.1 adapter with an in-memory transport and a controllable clock."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Coroutine, Iterator
from typing import Any

import pytest

from preforkd.proto.h1 import H1Limits
from preforkd.worker.connection import H1Protocol
from preforkd.worker.pool import AppThreads
from preforkd.worker.state import ConnectionSettings, WorkerState
from preforkd.wsgi import wakeup
from preforkd.wsgi.environ import ProxyTrust

App = Callable[[dict[str, Any], Any], Any]


class FakeTransport(asyncio.Transport):
    def __init__(self) -> None:
        super().__init__()
        self.data = bytearray()
        self.reading = True
        self.pauses = 0
        self.closed = False

    def write(self, data: bytes | bytearray | memoryview) -> None:
        assert not self.closed, "write after close"
        self.data += data

    def pause_reading(self) -> None:
        assert self.reading, "paused twice"
        self.reading = False
        self.pauses += 1

    def resume_reading(self) -> None:
        assert not self.reading, "resumed while reading"
        self.reading = True

    def is_reading(self) -> bool:
        return self.reading

    def close(self) -> None:
        self.closed = True

    def is_closing(self) -> bool:
        return self.closed

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"peername": ("10.0.0.1", 4242), "sockname": ("127.0.0.1", 8000)}.get(name)


def hello(environ: dict[str, Any], start_response: Any) -> list[bytes]:
    start_response("200 OK", [])
    return [environ["PATH_INFO"].encode()]


def settings(**kw: Any) -> ConnectionSettings:
    base: dict[str, Any] = {
        "limits": H1Limits(),
        "keep_alive": 5.0,
        "header_timeout": 2.0,
        "multiprocess": False,
        "multithread": True,
        "body_buffer": 1024,
    }
    return ConnectionSettings(**{**base, **kw})


class Harness:
    def __init__(self, loop: asyncio.AbstractEventLoop, app: App, **kw: Any) -> None:
        self.executor = AppThreads(4)
        self.state = WorkerState(
            app=app,
            settings=settings(**kw),
            executor=self.executor,
            proxy=ProxyTrust([]),
            call_soon_threadsafe=loop.call_soon_threadsafe,
        )
        self.transport = FakeTransport()
        self.proto = H1Protocol(self.state)
        self.proto.connection_made(self.transport)

    async def until(self, condition: Callable[[], object], timeout: float = 5.0) -> None:
        deadline = time.monotonic() + timeout
        while not condition():
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"condition not met; output so far {bytes(self.transport.data)!r}"
                )
            await asyncio.sleep(0.001)  # yields to the loop so handoffs run

    def output(self) -> bytes:
        return bytes(self.transport.data)


def run(coro_fn: Callable[[asyncio.AbstractEventLoop], Coroutine[Any, Any, None]]) -> None:
    async def main() -> None:
        await coro_fn(asyncio.get_running_loop())

    asyncio.run(main())


def test_pipelined_requests_pause_reading_and_answer_in_order() -> None:
    gate = threading.Event()

    def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        if environ["PATH_INFO"] == "/first":
            gate.wait(5)
        start_response("200 OK", [])
        return [environ["PATH_INFO"].encode()]

    async def scenario(loop: asyncio.AbstractEventLoop) -> None:
        h = Harness(loop, app)
        h.proto.data_received(
            b"GET /first HTTP/1.1\r\nHost: a\r\n\r\nGET /second HTTP/1.1\r\nHost: a\r\n\r\n"
        )
        assert not h.transport.reading, "a waiting pipelined request pauses reading"
        gate.set()
        await h.until(lambda: h.output().count(b"HTTP/1.1 200") == 2)
        out = h.output()
        assert out.index(b"/first") < out.index(b"/second")
        await h.until(lambda: h.transport.reading)

    run(scenario)


def test_full_body_buffer_pauses_reading_until_the_app_reads() -> None:
    release = threading.Event()
    read_sizes: list[int] = []

    def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        release.wait(5)
        while chunk := environ["wsgi.input"].read(300):
            read_sizes.append(len(chunk))
        start_response("200 OK", [])
        return [str(sum(read_sizes)).encode()]

    async def scenario(loop: asyncio.AbstractEventLoop) -> None:
        h = Harness(loop, app, body_buffer=1024)
        h.proto.data_received(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5000\r\n\r\n")
        h.proto.data_received(b"x" * 2000)
        assert not h.transport.reading, "more than the body buffer: stop reading"
        release.set()
        await h.until(lambda: h.transport.reading)
        for _ in range(3):
            h.proto.data_received(b"x" * 1000)
            await h.until(lambda: h.transport.reading)
        await h.until(lambda: b"5000" in h.output())

    run(scenario)


def test_body_pieces_of_one_loop_turn_wake_the_reading_app_once(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A wake-up costs thread switches: the app thread blocked in wsgi.input is woken
    # once the loop turn's reads are in (Exchange.wake_reader, via call_soon), and only
    # if its read can then return; not per read.
    reads: list[bytes] = []

    def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        stream = environ["wsgi.input"]
        reads.append(stream.read(100))
        reads.append(stream.read(400))
        reads.append(stream.read())
        start_response("200 OK", [])
        return [b"%d" % sum(map(len, reads))]

    async def scenario(loop: asyncio.AbstractEventLoop) -> None:
        h = Harness(loop, app, body_buffer=1024)
        h.state.call_soon = loop.call_soon
        h.proto.data_received(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 600\r\n\r\n")
        current = h.proto.current
        assert current is not None
        body = current.input
        wakes: list[str] = []
        real_wake = wakeup.ThreadWaker.wake
        monkeypatch.setattr(
            wakeup.ThreadWaker, "wake", lambda self: (wakes.append("one"), real_wake(self))[1]
        )
        await h.until(lambda: body.waiting)  # read(100) waits: nothing yet
        for _ in range(5):
            h.proto.data_received(b"y" * 100)  # one turn: no await between the reads
        assert not wakes
        await h.until(lambda: len(reads) == 2 and body.waiting)
        assert reads == [b"y" * 100, b"y" * 400]
        assert wakes == ["one"]  # read(400) found its bytes there: no second wake
        h.proto.data_received(b"y" * 60)  # not enough for read(): no wake this turn
        await asyncio.sleep(0.01)
        assert wakes == ["one"]
        h.proto.data_received(b"y" * 40)  # the end of the body: EOF wakes at once
        await h.until(lambda: b"600" in h.output())
        assert wakes == ["one", "one"]  # EOF wakes the reader that still waits

    run(scenario)


def test_slow_transport_blocks_the_writing_app_thread() -> None:
    produced: list[int] = []

    def app(environ: dict[str, Any], start_response: Any) -> Iterator[bytes]:
        start_response("200 OK", [])
        for i in range(5):
            produced.append(i)
            yield b"c" * 10

    async def scenario(loop: asyncio.AbstractEventLoop) -> None:
        h = Harness(loop, app)
        h.proto.pause_writing()  # the transport buffer is over its high-water mark
        h.proto.data_received(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
        await h.until(lambda: produced == [0] and b"cccccccccc" in h.output())
        await asyncio.sleep(0.05)
        assert produced == [0], "the app must wait while the transport is paused"
        h.proto.resume_writing()
        await h.until(lambda: h.output().endswith(b"0\r\n\r\n"))
        assert produced == [0, 1, 2, 3, 4]

    run(scenario)


def test_disconnect_mid_response_closes_the_iterable() -> None:
    closed = threading.Event()

    class Endless:
        def __iter__(self) -> Iterator[bytes]:
            while True:
                yield b"data"

        def close(self) -> None:
            closed.set()

    def app(environ: dict[str, Any], start_response: Any) -> Endless:
        start_response("200 OK", [])
        return Endless()

    async def scenario(loop: asyncio.AbstractEventLoop) -> None:
        h = Harness(loop, app)
        h.proto.pause_writing()
        h.proto.data_received(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
        await h.until(lambda: b"data" in h.output())
        h.proto.connection_lost(ConnectionResetError())
        await h.until(closed.is_set)
        await h.until(lambda: h.state.in_flight == 0)

    run(scenario)


@pytest.mark.parametrize(("sent", "expect_408"), [(b"", False), (b"GET / HT", True)])
def test_deadlines_by_controllable_clock(sent: bytes, expect_408: bool) -> None:
    async def scenario(loop: asyncio.AbstractEventLoop) -> None:
        h = Harness(loop, hello, header_timeout=2.0)
        if sent:
            h.proto.data_received(sent)
        h.proto.check_deadline(h.state.now + 1.9)
        assert not h.transport.closed
        h.proto.check_deadline(h.state.now + 2.1)
        assert h.transport.closed
        assert h.output().startswith(b"HTTP/1.1 408") is expect_408

    run(scenario)


def test_idle_keep_alive_deadline_after_a_response() -> None:
    async def scenario(loop: asyncio.AbstractEventLoop) -> None:
        h = Harness(loop, hello, keep_alive=5.0)
        h.proto.data_received(b"GET /a HTTP/1.1\r\nHost: a\r\n\r\n")
        await h.until(lambda: h.output().endswith(b"/a"))
        assert h.proto.deadline is not None
        h.proto.check_deadline(h.proto.deadline - 0.1)
        assert not h.transport.closed
        h.proto.check_deadline(h.proto.deadline + 0.1)
        assert h.transport.closed and b"408" not in h.output()

    run(scenario)


def test_no_deadline_while_the_app_runs() -> None:
    gate = threading.Event()

    def slow(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        gate.wait(5)
        start_response("200 OK", [])
        return [b"ok"]

    async def scenario(loop: asyncio.AbstractEventLoop) -> None:
        h = Harness(loop, slow, header_timeout=1.0)
        h.proto.data_received(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
        h.proto.check_deadline(h.state.now + 1000)
        assert not h.transport.closed
        gate.set()
        await h.until(lambda: h.output().endswith(b"ok"))

    run(scenario)


def test_protocol_error_answers_and_closes() -> None:
    async def scenario(loop: asyncio.AbstractEventLoop) -> None:
        h = Harness(loop, hello)
        h.proto.data_received(b"GET / HTTP/1.1\r\n\r\n")  # no Host
        assert h.output().startswith(b"HTTP/1.1 400") and h.transport.closed

    run(scenario)


def test_drain_serves_requests_that_arrive_and_closes_after_them() -> None:
    gate = threading.Event()

    def slow(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        gate.wait(5)
        start_response("200 OK", [])
        return [b"done"]

    async def scenario(loop: asyncio.AbstractEventLoop) -> None:
        # A fresh connection whose request is still on its way is not cut off: the
        # request is served, with "Connection: close".
        fresh = Harness(loop, slow)
        fresh.state.draining = True
        fresh.proto.drain()
        assert not fresh.transport.closed
        gate.set()
        fresh.proto.data_received(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
        await fresh.until(lambda: fresh.transport.closed)
        assert b"Connection: close" in fresh.output() and fresh.output().endswith(b"done")
        # A request in progress finishes, then the connection closes.
        gate.clear()
        busy = Harness(loop, slow)
        busy.proto.data_received(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
        busy.state.draining = True
        busy.proto.drain()
        assert not busy.transport.closed
        gate.set()
        await busy.until(lambda: busy.transport.closed)
        assert busy.output().endswith(b"done")

    run(scenario)


def test_idle_connection_ends_at_its_deadline_while_draining() -> None:
    async def scenario(loop: asyncio.AbstractEventLoop) -> None:
        h = Harness(loop, hello, keep_alive=5.0)
        h.proto.data_received(b"GET /a HTTP/1.1\r\nHost: a\r\n\r\n")
        await h.until(lambda: h.output().endswith(b"/a"))
        h.state.draining = True
        h.proto.drain()
        assert not h.transport.closed
        assert h.proto.deadline is not None
        h.proto.check_deadline(h.proto.deadline + 0.1)
        assert h.transport.closed

    run(scenario)


def test_client_that_takes_no_data_is_aborted_after_send_timeout() -> None:
    class Endless:
        def __iter__(self) -> Iterator[bytes]:
            while True:
                yield b"x" * 1000

    def app(environ: dict[str, Any], start_response: Any) -> Endless:
        start_response("200 OK", [])
        return Endless()

    async def scenario(loop: asyncio.AbstractEventLoop) -> None:
        h = Harness(loop, app, send_timeout=10.0)
        aborted: list[bool] = []
        h.transport.abort = lambda: aborted.append(True)  # type: ignore[method-assign]
        h.proto.data_received(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
        await h.until(lambda: len(h.output()) > 0)
        h.proto.pause_writing()  # the client stopped reading
        h.proto.check_deadline(h.state.now + 9)
        assert not aborted
        h.proto.check_deadline(h.state.now + 11)
        assert aborted
        h.proto.connection_lost(None)  # what abort() leads to
        await h.until(lambda: h.state.in_flight == 0)  # the app thread was released

    run(scenario)


def test_large_body_is_written_with_its_head_without_joining() -> None:
    big = b"x" * (64 * 1024)
    pieces: list[list[bytes]] = []

    def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        start_response("200 OK", [("Content-Length", str(len(big)))])
        return [big]

    async def scenario(loop: asyncio.AbstractEventLoop) -> None:
        h = Harness(loop, app)
        writelines = h.transport.writelines

        def record(parts: Any) -> None:
            pieces.append(list(parts))
            writelines(parts)

        h.transport.writelines = record  # type: ignore[method-assign]
        h.proto.data_received(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
        await h.until(lambda: h.output().endswith(big))
        assert len(pieces) == 1 and pieces[0][-1] is big  # the app's bytes, not a copy
        assert h.output().startswith(b"HTTP/1.1 200 OK\r\n")

    run(scenario)
