"""An in-memory stand-in for the event loop side of the bridge."""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

from preforkd.wsgi.bridge import Head


class FakeLoop:
    """call_soon_threadsafe puts callables on a queue that the test thread runs."""

    def __init__(self) -> None:
        self.calls: queue.SimpleQueue[tuple[Callable[..., Any], tuple[Any, ...]]] = (
            queue.SimpleQueue()
        )

    def call_soon_threadsafe(self, fn: Callable[..., Any], *args: Any) -> None:
        self.calls.put((fn, args))

    def run_until(self, condition: Callable[[], bool], timeout: float = 5.0) -> None:
        deadline = time.monotonic() + timeout
        while not condition():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError("condition not met before the deadline")
            try:
                fn, args = self.calls.get(timeout=min(remaining, 0.05))
            except queue.Empty:
                continue
            fn(*args)


class FakeChannel:
    """Records what the bridge sends; acknowledges writes unless told to hold them."""

    can_sendfile = False

    def __init__(self) -> None:
        self.head: Head | None = None
        self.body: list[bytes] = []
        self.ended = False
        self.failed: bool | None = None  # head_sent value given to fail()
        self.handoffs = 0
        self.hold = False
        self.held: list[Callable[[], None]] = []
        self.on_send: Callable[[], None] | None = None

    def send(
        self, head: Head | None, body: Sequence[bytes], end: bool, done: Callable[[], None] | None
    ) -> None:
        self.handoffs += 1
        if head is not None:
            assert self.head is None, "head sent twice"
            self.head = head
        self.body.extend(body)
        self.ended = self.ended or end
        if self.on_send is not None:
            self.on_send()
        if done is not None:
            if self.hold:
                self.held.append(done)
            else:
                done()

    def send_file(
        self, head: Head | None, fd: int, offset: int, count: int | None, done: Callable[[], None]
    ) -> None:
        raise AssertionError("not used")

    def fail(self, head_sent: bool) -> None:
        self.failed = head_sent

    @property
    def done(self) -> bool:
        return self.ended or self.failed is not None


def run_in_thread(target: Callable[[], None]) -> threading.Thread:
    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    return thread
