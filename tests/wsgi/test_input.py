"""wsgi.input: bounded buffering between the loop thread and an app thread."""

from __future__ import annotations

import io
import itertools
import threading

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from preforkd.errors import ClientDisconnected
from preforkd.wsgi.input import InputStream
from tests.wsgi.fakes import FakeLoop, run_in_thread


def make(high_water: int = 16) -> tuple[InputStream, FakeLoop, list[int]]:
    loop = FakeLoop()
    consumed: list[int] = []
    stream = InputStream(loop.call_soon_threadsafe, consumed.append, high_water)
    return stream, loop, consumed


def test_read_all_available_then_eof() -> None:
    stream, _, _ = make()
    stream.feed(b"hello ")
    stream.feed(b"world")
    stream.feed_eof()
    assert stream.read() == b"hello world"
    assert stream.read() == b""
    assert stream.read(10) == b""


def test_read_size_blocks_until_enough_or_eof() -> None:
    stream, loop, _ = make()
    result: list[bytes] = []
    thread = run_in_thread(lambda: result.append(stream.read(8)))
    stream.feed(b"abc")
    loop.run_until(lambda: stream.demanded)
    assert not result, "read(8) must not return 3 bytes before EOF"
    stream.feed(b"defghij")
    thread.join(5)
    assert result == [b"abcdefgh"]
    stream.feed_eof()
    assert stream.read(100) == b"ij"


def test_feed_reports_high_water_so_reading_can_pause() -> None:
    stream, _, _ = make(high_water=16)
    assert stream.feed(b"x" * 16) is False
    assert stream.feed(b"x") is True


def test_reading_more_than_high_water_does_not_stall() -> None:
    # The producer only resumes when consumption is reported: a read(n) larger than the
    # buffer must consume as it goes, or producer and consumer would wait on each other.
    stream, loop, consumed = make(high_water=16)
    total = 200
    result: list[bytes] = []
    thread = run_in_thread(lambda: result.append(stream.read(total)))
    sent = 0
    paused = False
    while not result:
        if not paused and sent < total:
            paused = stream.feed(b"y" * 10)
            sent += 10
            continue
        before = len(consumed)
        loop.run_until(lambda before=before: len(consumed) > before or bool(result))  # type: ignore[misc]
        paused = stream.buffered > 16
    thread.join(5)
    assert result == [b"y" * total]
    loop.run_until(lambda: sum(consumed) == total)  # every byte read was reported


def test_first_demand_is_reported_even_with_nothing_consumed() -> None:
    stream, loop, consumed = make()
    thread = run_in_thread(lambda: stream.read(1))
    loop.run_until(lambda: consumed == [0])  # this is when HTTP/1.1 sends 100 Continue
    stream.feed(b"z")
    thread.join(5)


def _blocked_read(
    stream: InputStream, loop: FakeLoop, size: int
) -> tuple[threading.Thread, list[bytes]]:
    """An app thread blocked in ``stream.read(size)``; its first demand is handled."""
    result: list[bytes] = []
    thread = run_in_thread(lambda: result.append(stream.read(size)))
    loop.run_until(lambda: stream.demanded)
    return thread, result


def test_http2_reader_is_woken_once_its_read_can_return() -> None:
    # HTTP/2 passes how much the client may still send (receivable): a reader waiting for
    # 8 bytes, with 3 buffered and 5 more allowed, is not woken for the 3 (each wake costs
    # thread switches); once 8 are there, it is, and takes them in one piece.
    stream, loop, consumed = make()
    thread, result = _blocked_read(stream, loop, 8)
    stream.feed(b"abc", wake=False)
    stream.wake(receivable=5)
    stream.feed(b"defgh", wake=False)
    stream.wake(receivable=0)
    thread.join(5)
    loop.run_until(lambda: sum(consumed) == 8)
    assert result == [b"abcdefgh"]
    assert consumed == [0, 8], "woken before its read could return"


def test_http2_reader_is_woken_when_the_windows_keep_the_rest_from_coming() -> None:
    # 3 buffered, 5 missing, only 2 more may come before the windows reopen, and they
    # reopen only as the reader consumes: it must take the 3 now, and report them.
    stream, loop, consumed = make()
    thread, result = _blocked_read(stream, loop, 8)
    stream.feed(b"abc", wake=False)
    stream.wake(receivable=2)
    loop.run_until(lambda: consumed == [0, 3])
    assert not result
    # With nothing buffered there is nothing to consume: no wake, however shut.
    stream.wake(receivable=0)
    stream.feed(b"defgh", wake=False)
    stream.wake(receivable=0)
    thread.join(5)
    assert result == [b"abcdefgh"]
    loop.run_until(lambda: sum(consumed) == 8)
    assert consumed == [0, 3, 5]


def test_feed_all_is_feed_of_each_piece() -> None:
    stream, loop, _ = make()
    thread, result = _blocked_read(stream, loop, 8)
    stream.feed_all([b"abc", b"de", b"fghij"])
    assert stream.buffered == 10
    stream.wake(receivable=100)
    thread.join(5)
    assert result == [b"abcdefgh"]
    stream.feed_eof()
    assert stream.read() == b"ij"


def test_readline_and_iteration() -> None:
    stream, _, _ = make(high_water=1024)
    stream.feed(b"one\ntwo\nthree")
    stream.feed_eof()
    assert stream.readline() == b"one\n"
    assert list(stream) == [b"two\n", b"three"]


def test_readline_respects_size_and_caps_endless_lines() -> None:
    stream, _, _ = make(high_water=8)
    stream.feed(b"abcdefghijkl\n")
    stream.feed_eof()
    assert stream.readline(3) == b"abc"
    assert stream.readline() == b"defghijk"  # capped at the buffer size
    assert stream.readline() == b"l\n"


def test_readlines_with_hint() -> None:
    stream, _, _ = make(high_water=1024)
    stream.feed(b"a\nb\nc\n")
    stream.feed_eof()
    # As io.IOBase.readlines: stop once the lines read reach the hint.
    assert stream.readlines(3) == [b"a\n", b"b\n"]
    assert stream.readlines() == [b"c\n"]


def test_error_wakes_a_blocked_reader_and_raises() -> None:
    stream, loop, _ = make()
    errors: list[BaseException] = []

    def read() -> None:
        try:
            stream.read(10)
        except ClientDisconnected as exc:
            errors.append(exc)

    thread = run_in_thread(read)
    stream.feed(b"short")
    loop.run_until(lambda: stream.demanded)
    stream.feed_error(ClientDisconnected("client closed before the body was complete"))
    thread.join(5)
    assert len(errors) == 1


def test_error_after_eof_is_ignored() -> None:
    stream, _, _ = make()
    stream.feed(b"ok")
    stream.feed_eof()
    stream.feed_error(ClientDisconnected("late"))
    assert stream.read() == b"ok"


def test_bytes_read_counts_consumption() -> None:
    stream, _, _ = make()
    stream.feed(b"12345")
    stream.feed_eof()
    stream.read(2)
    stream.readline()
    assert stream.bytes_read == 5


@pytest.mark.parametrize("size", [None, -1])
def test_read_none_or_negative_reads_everything(size: int | None) -> None:
    stream, loop, _ = make()
    result: list[bytes] = []
    thread = run_in_thread(lambda: result.append(stream.read(size)))
    stream.feed(b"ab")
    loop.run_until(lambda: stream.demanded)
    stream.feed(b"cd")
    stream.feed_eof()
    thread.join(5)
    assert result == [b"abcd"]


@settings(max_examples=300, deadline=None)
@given(
    body=st.binary(max_size=300),
    cuts=st.lists(st.integers(min_value=0, max_value=300), max_size=8),
    ops=st.lists(
        st.tuples(st.sampled_from(["read", "readline"]), st.integers(min_value=-1, max_value=40)),
        max_size=20,
    ),
)
def test_any_chunking_and_any_reads_match_a_plain_file(
    body: bytes, cuts: list[int], ops: list[tuple[str, int]]
) -> None:
    stream, _, _ = make(high_water=64)
    points = sorted({c for c in cuts if c < len(body)} | {0, len(body)})
    for start, end in itertools.pairwise(points):
        stream.feed(body[start:end])
    stream.feed_eof()
    reference = io.BytesIO(body)
    for op, size in ops:
        if op == "read":
            assert stream.read(size) == reference.read(size)
        else:
            # readline is capped at the buffer size (64 here) when no size is given.
            limit = 64 if size < 0 else size
            assert stream.readline(size) == reference.readline(limit)
    assert stream.read() == reference.read()
    assert stream.bytes_read == len(body)
