"""wsgi.input as HTTP/1.1 uses it (``windowed=False``): fewer reports to the loop, and
still no stall whatever the reads and the pieces."""

from __future__ import annotations

import random
import threading
import time

import pytest

from preforkd.wsgi.input import InputStream
from tests.wsgi.fakes import FakeLoop, run_in_thread


def make(high_water: int = 16) -> tuple[InputStream, FakeLoop, list[int]]:
    loop = FakeLoop()
    consumed: list[int] = []
    stream = InputStream(loop.call_soon_threadsafe, consumed.append, high_water, windowed=False)
    return stream, loop, consumed


def wait_until(condition: object, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():  # type: ignore[operator]
        assert time.monotonic() < deadline, "condition not met before the deadline"
        time.sleep(0.001)


def test_consumption_is_reported_only_to_resume_reading() -> None:
    stream, loop, consumed = make(high_water=16)
    assert stream.feed(b"a" * 10) is False
    assert stream.read(4) == b"aaaa"  # nothing to resume, no demand unmet: no report
    assert stream.feed(b"b" * 12) is True  # 18 > 16: the adapter pauses reading
    assert stream.read(9) == b"aaaaaabbb"  # 9 left: still over half the buffer
    assert loop.calls.empty()
    assert stream.read(1) == b"b"  # 8 left: reading may resume
    loop.run_until(lambda: consumed == [14])
    assert stream.read(8) == b"b" * 8
    assert loop.calls.empty()


def test_rest_of_a_read_fed_after_the_report_keeps_reading_paused_only_if_over() -> None:
    # The loop feeds a read's pieces (chunked: several Data events) one by one, and the
    # app thread may run in between: a report to resume can be on its way while the rest
    # of the read comes in. The adapter asks over_high_water when the report arrives.
    stream, loop, consumed = make(high_water=16)
    assert stream.feed(b"a" * 20) is True  # the adapter pauses reading
    assert stream.over_high_water
    assert stream.read(12) == b"a" * 12  # 8 left: report "resume" (not yet run)
    assert stream.feed(b"b" * 5) is False  # the rest of that read: 13 > half, not over
    loop.run_until(lambda: consumed == [12])
    assert not stream.over_high_water  # so the adapter resumes: no report would follow
    assert stream.feed(b"c" * 10) is True  # over again
    assert stream.read(5) == b"aaaaa"  # 18 left
    assert stream.over_high_water and loop.calls.empty()
    assert stream.read(10) == b"aaabbbbbcc"  # 8 left: reported, reading may resume
    loop.run_until(lambda: consumed == [12, 15])
    assert not stream.over_high_water


def test_first_unmet_demand_is_reported_once() -> None:
    stream, loop, consumed = make()
    result: list[bytes] = []
    thread = run_in_thread(lambda: result.append(stream.read(3)))
    loop.run_until(lambda: consumed == [0])  # the moment HTTP/1.1 sends 100 Continue
    stream.feed(b"xyz")
    thread.join(5)
    thread = run_in_thread(lambda: result.append(stream.read(3)))
    wait_until(lambda: stream.waiting)
    stream.feed(b"123")
    thread.join(5)
    assert result == [b"xyz", b"123"]
    assert loop.calls.empty()  # demanded already: no second report


def test_eof_and_errors_wake_a_reader_that_wants_more() -> None:
    stream, _, _ = make(high_water=64)
    result: list[bytes] = []
    thread = run_in_thread(lambda: result.append(stream.read(50)))
    wait_until(lambda: stream.waiting)
    stream.feed(b"short")
    stream.feed_eof()
    thread.join(5)
    assert result == [b"short"]


@pytest.mark.parametrize("windowed", [False, True])
@pytest.mark.parametrize("seed", range(12))
def test_producer_with_pauses_and_random_reads_never_stall(windowed: bool, seed: int) -> None:
    # The HTTP/1.1 adapter's protocol, with a real producer thread: feed until over high
    # water, then pause until a report finds the buffer at half or less (worker/
    # connection.py Exchange._on_consumed). Any stall ends in the join's timeout.
    rng = random.Random(seed)
    high_water = rng.choice([16, 64, 1000])
    body = rng.randbytes(rng.randrange(1, 20_000))
    resume = threading.Event()
    resume.set()

    def on_consumed(nbytes: int) -> None:  # as worker/connection.py Exchange._on_consumed
        if windowed:
            if stream.buffered <= high_water // 2:
                resume.set()
        elif not stream.over_high_water:
            resume.set()

    loop_calls: list[object] = []
    lock = threading.Lock()

    def schedule(fn: object) -> None:  # the loop thread is the producer below
        with lock:
            loop_calls.append(fn)

    stream = InputStream(schedule, on_consumed, high_water, windowed=windowed)
    done = threading.Event()

    def produce() -> None:
        sent = 0
        while sent < len(body):
            with lock:
                calls = loop_calls[:]
                loop_calls.clear()
            for fn in calls:
                fn()  # type: ignore[operator]
            if not resume.is_set():
                time.sleep(0.0005)
                continue
            # One read, fed as several pieces (chunked Data events): all of it is fed,
            # even after a piece pauses reading, and the reader may run in between.
            for _ in range(rng.randrange(1, 5)):
                size = rng.randrange(1, 3 * high_water)
                if stream.feed(body[sent : sent + size]):
                    resume.clear()
                sent += size
                if rng.random() < 0.3:
                    time.sleep(0)
        stream.feed_eof()
        done.set()

    producer = threading.Thread(target=produce, daemon=True)
    producer.start()
    received: list[bytes] = []
    sizes = [rng.choice([1, 7, high_water, 3 * high_water, -1]) for _ in range(len(body) + 1)]

    def consume() -> None:
        for size in sizes:
            piece = stream.read(size)
            if not piece:
                return
            received.append(piece)

    reader = threading.Thread(target=consume, daemon=True)
    reader.start()
    reader.join(10)
    assert not reader.is_alive(), f"stalled after {sum(map(len, received))} bytes"
    producer.join(10)
    assert done.is_set()
    assert b"".join(received) == body
