"""The WSGI bridge: PEP 3333 start_response/write/iterate/close rules, and the handoff."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from preforkd.proto.events import Request
from preforkd.wsgi.bridge import WSGICycle
from tests.wsgi.fakes import FakeChannel, FakeLoop, run_in_thread

App = Callable[[dict[str, Any], Any], Any]


def serve(app: App, channel: FakeChannel | None = None) -> tuple[FakeChannel, WSGICycle]:
    loop = FakeLoop()
    channel = channel or FakeChannel()
    request = Request("GET", "/", "1.1", [("host", "x")])
    cycle = WSGICycle(app, request, {"REQUEST_METHOD": "GET"}, channel, loop.call_soon_threadsafe)
    thread = run_in_thread(cycle.run)
    loop.run_until(lambda: channel.done and not thread.is_alive())
    return channel, cycle


def test_list_response_is_one_handoff_with_content_length() -> None:
    def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"hello ", b"world"]

    channel, cycle = serve(app)
    assert channel.handoffs == 1
    assert channel.head == ("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "11")])
    assert b"".join(channel.body) == b"hello world"
    assert channel.ended
    assert cycle.bytes_sent == 11


def test_no_content_length_added_for_204_or_when_app_set_one() -> None:
    def no_content(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        start_response("204 No Content", [])
        return []

    def explicit(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        start_response("200 OK", [("content-length", "2")])
        return [b"ok"]

    assert serve(no_content)[0].head == ("204 No Content", [])
    assert serve(explicit)[0].head == ("200 OK", [("content-length", "2")])


def test_generator_streams_each_chunk_and_close_is_called() -> None:
    closed: list[bool] = []

    class Body:
        def __iter__(self) -> Iterator[bytes]:
            yield b"a"
            yield b""
            yield b"b"

        def close(self) -> None:
            closed.append(True)

    def app(environ: dict[str, Any], start_response: Any) -> Body:
        start_response("200 OK", [])
        return Body()

    channel, _ = serve(app)
    assert channel.body == [b"a", b"b"]
    assert channel.head == ("200 OK", [])  # no Content-Length: the framer will chunk
    assert channel.ended and closed == [True]


def test_start_response_may_be_called_lazily_by_a_generator() -> None:
    def app(environ: dict[str, Any], start_response: Any) -> Iterator[bytes]:
        start_response("201 Created", [])
        yield b"made"

    channel, _ = serve(app)
    assert channel.head is not None and channel.head[0] == "201 Created"


def test_write_callable_sends_before_the_iterable() -> None:
    def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        write = start_response("200 OK", [])
        write(b"first ")
        return [b"second"]

    channel, _ = serve(app)
    assert b"".join(channel.body) == b"first second"
    assert channel.head == ("200 OK", [])  # head went out with write(): length unknown


def test_exception_before_head_gives_500() -> None:
    def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        raise RuntimeError("boom")

    channel, cycle = serve(app)
    assert channel.failed is False
    assert cycle.status == "500 Internal Server Error"


def test_exception_after_head_aborts() -> None:
    def app(environ: dict[str, Any], start_response: Any) -> Iterator[bytes]:
        start_response("200 OK", [])
        yield b"partial"
        raise RuntimeError("boom")

    channel, _ = serve(app)
    assert channel.failed is True
    assert not channel.ended


def test_close_is_called_even_when_iteration_fails() -> None:
    closed: list[bool] = []

    class Body:
        def __iter__(self) -> Iterator[bytes]:
            raise RuntimeError("boom")

        def close(self) -> None:
            closed.append(True)

    def app(environ: dict[str, Any], start_response: Any) -> Body:
        start_response("200 OK", [])
        return Body()

    channel, _ = serve(app)
    assert closed == [True] and channel.failed is False


def test_exc_info_replaces_headers_before_they_are_sent() -> None:
    def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        start_response("200 OK", [("X-A", "1")])
        try:
            raise ValueError("oops")
        except ValueError:
            start_response("500 Oops", [("X-B", "2")], sys.exc_info())
        return [b"err"]

    channel, _ = serve(app)
    assert channel.head == ("500 Oops", [("X-B", "2"), ("Content-Length", "3")])


def test_exc_info_after_head_sent_reraises() -> None:
    seen: list[BaseException] = []

    def app(environ: dict[str, Any], start_response: Any) -> Iterator[bytes]:
        start_response("200 OK", [])
        yield b"x"
        try:
            raise ValueError("late")
        except ValueError:
            try:
                start_response("500 Oops", [], sys.exc_info())
            except ValueError as exc:
                seen.append(exc)
                raise

    channel, _ = serve(app)
    assert len(seen) == 1 and channel.failed is True


def test_second_start_response_without_exc_info_is_an_error() -> None:
    def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        start_response("200 OK", [])
        start_response("200 OK", [])
        return []

    channel, cycle = serve(app)
    assert channel.failed is False and channel.head is None  # the channel answers 500
    assert cycle.status == "500 Internal Server Error"


@pytest.mark.parametrize(
    ("status", "headers"),
    [
        ("200 OK", [("X-Evil", "a\r\nSet-Cookie: x=1")]),
        ("200 OK", [("X-Evil\n", "a")]),
        ("200 OK\r\nX: y", []),
        ("OK", []),
        ("200 OK", [("X", 1)]),
        ("200 OK", (("X", "1"),)),
        (b"200 OK", []),
    ],
)
def test_invalid_status_or_headers_give_500(status: Any, headers: Any) -> None:
    def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        start_response(status, headers)
        return [b"x"]

    channel, _ = serve(app)
    assert channel.failed is False and channel.head is None


def test_str_body_is_an_app_error() -> None:
    def app(environ: dict[str, Any], start_response: Any) -> list[str]:
        start_response("200 OK", [])
        return ["text"]

    channel, cycle = serve(app)
    assert channel.failed is False and channel.head is None  # the channel answers 500
    assert cycle.status == "500 Internal Server Error"


def test_body_before_start_response_is_an_app_error() -> None:
    def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        return [b"x"]

    channel, cycle = serve(app)
    assert channel.failed is False and channel.head is None  # the channel answers 500
    assert cycle.status == "500 Internal Server Error"


def test_writes_wait_for_the_loop_to_take_the_data() -> None:
    # Backpressure: while the channel holds the acknowledgement, the app thread is stuck
    # in its write and cannot produce more.
    loop = FakeLoop()
    channel = FakeChannel()
    channel.hold = True
    produced: list[int] = []

    def app(environ: dict[str, Any], start_response: Any) -> Iterator[bytes]:
        start_response("200 OK", [])
        for i in range(3):
            produced.append(i)
            yield b"chunk"

    cycle = WSGICycle(app, Request("GET", "/", "1.1", []), {}, channel, loop.call_soon_threadsafe)
    thread = run_in_thread(cycle.run)
    loop.run_until(lambda: len(channel.held) == 1)
    assert produced == [0]
    channel.held.pop()()
    loop.run_until(lambda: len(channel.held) == 1 and len(produced) == 2)
    channel.hold = False
    channel.held.pop()()
    loop.run_until(lambda: channel.ended)
    thread.join(5)
    assert produced == [0, 1, 2]


def test_disconnect_stops_iteration_and_closes() -> None:
    loop = FakeLoop()
    channel = FakeChannel()
    closed: list[bool] = []
    cycle_ref: list[WSGICycle] = []

    class Endless:
        def __iter__(self) -> Iterator[bytes]:
            while True:
                yield b"data"

        def close(self) -> None:
            closed.append(True)

    def app(environ: dict[str, Any], start_response: Any) -> Endless:
        start_response("200 OK", [])
        return Endless()

    def on_send() -> None:
        if channel.handoffs == 3:
            cycle_ref[0].disconnect()

    channel.on_send = on_send
    cycle = WSGICycle(app, Request("GET", "/", "1.1", []), {}, channel, loop.call_soon_threadsafe)
    cycle_ref.append(cycle)
    thread = run_in_thread(cycle.run)
    loop.run_until(lambda: not thread.is_alive())
    assert closed == [True]
    assert channel.handoffs == 3


class _Name(str):
    """A str subclass: equal to a plain str, but not the str PEP 3333 asks for."""


@pytest.mark.parametrize(
    "headers",
    [
        [("X-Seen", "ok"), ("X-Seen", "ok\r\nInjected: 1")],
        [(_Name("X-Seen"), "ok")],
        [("X-Seen", "ok", "extra")],
        [["X-Seen", "ok"]],
    ],
)
def test_headers_seen_before_do_not_let_a_bad_one_through(headers: Any) -> None:
    # _check_headers remembers pairs it has checked: an equal-looking pair of the wrong
    # shape or type, or a new value for a known name, is still checked.
    def good(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        start_response("200 OK", [("X-Seen", "ok")])
        return [b"x"]

    channel, _ = serve(good)
    assert channel.head is not None

    def bad(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        start_response("200 OK", headers)
        return [b"x"]

    channel, cycle = serve(bad)
    assert channel.failed is False and channel.head is None
    assert cycle.status == "500 Internal Server Error"
