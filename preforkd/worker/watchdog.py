"""The worker's watchdog: publish the heartbeat every tick, find overdue requests,
and dump every thread's stack when the master sends SIGABRT.

It lives on the worker's side of the arrows: it reads :class:`WorkerState` and writes
the worker's :class:`~preforkd.heartbeat.HeartbeatSlot`; ``heartbeat.py`` stays neutral
ground that the master imports too.
"""

from __future__ import annotations

import faulthandler
import logging
import sys
import threading
import time
import traceback
from collections.abc import Callable
from typing import IO, Any

from preforkd.heartbeat import Beat, HeartbeatSlot
from preforkd.worker.h2conn import H2Protocol
from preforkd.worker.state import WorkerState
from preforkd.worker.stats import RateMeter

log = logging.getLogger("preforkd.worker")  # the logger the watchdog always used


class Watchdog:
    """Called by the worker's ticker (loop thread): publish the heartbeat, and find
    requests running longer than ``request_timeout`` (0: no limit).

    A request over the limit gets its thread's stack logged (once) and the worker is
    stopped gracefully with ``stop(True)``: it stops accepting, the master starts a
    replacement, the other requests finish, and the worker exits within the graceful
    timeout.
    """

    def __init__(
        self,
        state: WorkerState,
        slot: HeartbeatSlot | None,
        request_timeout: float,
        stop: Callable[[bool], None],
        pid: int,
    ) -> None:
        self.state = state
        self.slot = slot
        self.request_timeout = request_timeout
        self.stop = stop
        self.pid = pid
        self._reported: set[tuple[int, float]] = set()  # (thread ident, start) logged
        self._rate = RateMeter()

    def tick(self) -> None:
        now = time.monotonic()
        self.publish(now)
        if self.request_timeout > 0:
            self._check_requests(now)

    def publish(self, now: float | None = None) -> None:
        if self.slot is not None:
            self.slot.write(self.beat(time.monotonic() if now is None else now))

    def beat(self, now: float) -> Beat:
        """This worker's state as the master reads it (status, top, metrics)."""
        state = self.state
        oldest_start, method, path = 0.0, "", ""
        running = state.running.copy()  # app threads change it; copy() is atomic
        if running:
            oldest_start, cycle = min(running.values(), key=lambda item: item[0])
            method, path = cycle.request.method, cycle.request.target
        h2 = sum(1 for conn in state.connections if isinstance(conn, H2Protocol))
        stats = state.stats
        return Beat(
            self.pid, now, state.requests_served, len(state.connections),
            max(0, state.in_flight), state.draining, h2,
            self._rate.update(now, state.requests_served), oldest_start, method, path,
            tuple(stats.by_status), tuple(stats.durations), stats.duration_sum,
            stats.body_in, stats.body_out,
        )  # fmt: skip

    def _check_requests(self, now: float) -> None:
        running = self.state.running.copy()  # app threads change it; copy() is atomic
        self._reported.intersection_update((ident, start) for ident, (start, _) in running.items())
        overdue = [
            (ident, start, cycle)
            for ident, (start, cycle) in running.items()
            if now - start > self.request_timeout and (ident, start) not in self._reported
        ]
        if not overdue:
            return
        frames = sys._current_frames()
        for ident, start, cycle in overdue:
            self._reported.add((ident, start))
            request = getattr(cycle, "request", None)
            what = f"{request.method} {request.target}" if request is not None else "a request"
            log.error(
                "Request %s has been running for %.1fs (--request-timeout %gs) in thread "
                "%s; its stack:\n%s",
                what,
                now - start,
                self.request_timeout,
                _thread_name(ident),
                _format_stack(frames.get(ident)),
            )
        if not self.state.draining:
            log.warning("Recycling this worker: it stops accepting and finishes its requests")
            self.stop(True)


def _thread_name(ident: int) -> str:
    for thread in threading.enumerate():
        if thread.ident == ident:
            return thread.name
    return hex(ident)


def _format_stack(frame: Any) -> str:
    if frame is None:
        return "  (the thread has just finished)"
    return "".join(traceback.format_stack(frame)).rstrip()


def install_stack_dumper() -> None:
    """On SIGABRT (and SIGSEGV, SIGBUS, SIGILL, SIGFPE), write every thread's stack to
    the error log, then die of the signal.

    ``faulthandler.register`` refuses SIGABRT ("use enable() instead"): the fatal-signal
    handler of ``faulthandler.enable`` is the one for it. It writes from the C signal
    handler, so the dump works even while a thread holds the GIL in C code, the very
    case a blocked event loop usually is. It keeps the file's descriptor, so call this
    again after the log files are reopened.
    """
    faulthandler.enable(file=_error_log_stream(), all_threads=True)


def _error_log_stream() -> IO[str]:
    """The stream of preforkd's error log handler, or standard error."""
    for handler in logging.getLogger("preforkd").handlers:
        stream = getattr(handler, "stream", None)
        if stream is not None and hasattr(stream, "fileno"):
            try:
                stream.fileno()
            except (OSError, ValueError):
                continue
            stream.flush()
            return stream  # type: ignore[no-any-return]
    return sys.stderr
