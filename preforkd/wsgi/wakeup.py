"""Waking a blocked app thread from the loop thread without a tussle for the GIL.

A thread blocked on a ``threading.Lock`` or ``Condition`` is woken by a call the loop
thread makes while it holds the GIL. On a busy worker (one core, or the woken thread
scheduled on the loop's core) the woken thread runs at once, finds the GIL taken and
sleeps again; the loop lets the GIL go at the end of its callback and wakes it a second
time, while still holding the GIL's own mutex, so it sleeps a third time. Measured with two
threads pinned to one core: 5.6 context switches and 21 µs of CPU per round trip.

Here the app thread blocks in ``os.read`` on an eventfd of its own (a pipe where there is
no eventfd), and the loop thread wakes it with ``os.write``, which it makes with the GIL
released: the woken thread takes the GIL at once. Same measure: 1 context switch and 7 µs
per round trip.

A wake that comes before the wait is not lost (the count stays in the fd), and a stale one
only makes a later wait return early: callers wait in a loop that re-checks its condition.
"""

from __future__ import annotations

import os
import sys
import threading

__all__ = ["ThreadWaker", "current_waker"]

_ONE = (1).to_bytes(8, sys.byteorder)  # an eventfd takes a native 8-byte count


class ThreadWaker:
    """One thread's wake-up fd: that thread calls :meth:`wait`, any thread :meth:`wake`."""

    __slots__ = ("_rfd", "_wfd")

    def __init__(self) -> None:
        self._rfd = self._wfd = -1
        if hasattr(os, "eventfd"):  # Linux: one fd, a counter
            self._rfd = self._wfd = os.eventfd(0, os.EFD_CLOEXEC)
        else:
            self._rfd, self._wfd = os.pipe()

    def wait(self) -> None:
        """Block until woken (the GIL is released meanwhile, as for any read)."""
        os.read(self._rfd, 8)  # an eventfd's count, or up to 8 wake bytes of a pipe

    def wake(self) -> None:
        os.write(self._wfd, _ONE)

    def __del__(self) -> None:  # the thread has ended (its thread-local is gone)
        if self._rfd >= 0:
            os.close(self._rfd)
        if self._wfd != self._rfd and self._wfd >= 0:
            os.close(self._wfd)


_local = threading.local()


def current_waker() -> ThreadWaker:
    """The calling thread's waker, made on its first wait."""
    waker: ThreadWaker | None = getattr(_local, "waker", None)
    if waker is None:
        waker = _local.waker = ThreadWaker()
    return waker
