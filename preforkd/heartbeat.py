"""The heartbeat table, and the worker-side watchdog that writes to it.

Theory of operation. The master creates one :class:`HeartbeatTable` before it forks
anything: an anonymous ``MAP_SHARED`` mapping, so every worker forked afterwards sees the
same memory. The master gives each worker one slot (an index free among the live
workers, not the worker's slot number: during a reload two generations each have a
"worker 1"). The worker's event loop writes its slot at every tick (:class:`Watchdog`);
the master only reads, except to clear a slot before handing it to a new worker. One
writer per slot, so no lock: a sequence counter (odd while a write is in progress, a
seqlock) lets the reader retry instead of using a half-written record.

``tick`` is ``time.monotonic()``: CLOCK_MONOTONIC is one clock for the whole machine, so
the master compares it with its own. A worker whose tick is older than ``--timeout`` has
a blocked event loop; the master sends it SIGABRT, which the handler installed by
:func:`install_stack_dumper` turns into a dump of every thread's stack in the error log
before the worker dies of it; SIGKILL follows if it is still there (stopped, or the
handler itself stuck).

This module is neutral ground: the worker imports it, the master imports it, and it
imports neither of them (only for type checking).
"""

from __future__ import annotations

import faulthandler
import logging
import mmap
import struct
import sys
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from typing import IO, TYPE_CHECKING, Any

if TYPE_CHECKING:
    from preforkd.worker.state import WorkerState

log = logging.getLogger("preforkd.worker")

# seq, pid, tick, requests served, open connections, in-flight requests, flags.
_RECORD = struct.Struct("=IIdQIII")
SLOT_SIZE = 64  # a cache line per slot: workers never write the same line
# Slots are handed out among *live* workers; a reload briefly doubles their number.
DEFAULT_CAPACITY = 4096
DRAINING = 1  # flags bit: the worker stopped accepting and is finishing its requests
_READ_ATTEMPTS = 100


@dataclass(frozen=True, slots=True)
class Beat:
    """One worker's last report."""

    pid: int
    tick: float  # time.monotonic() of the worker's last loop tick; 0.0: never
    requests: int  # requests served so far
    connections: int  # open connections
    in_flight: int  # application calls running
    draining: bool


class HeartbeatSlot:
    """One worker's record in the table. Inherited through fork with the table."""

    def __init__(self, memory: mmap.mmap, index: int) -> None:
        self._memory = memory
        self.index = index
        self._offset = index * SLOT_SIZE

    def write(self, beat: Beat) -> None:
        """Publish ``beat`` (only the slot's owner calls this)."""
        seq = _RECORD.unpack_from(self._memory, self._offset)[0]
        odd = (seq | 1) & 0xFFFFFFFF
        struct.pack_into("=I", self._memory, self._offset, odd)
        flags = DRAINING if beat.draining else 0
        _RECORD.pack_into(
            self._memory, self._offset, odd, beat.pid, beat.tick, beat.requests,
            beat.connections, beat.in_flight, flags,
        )  # fmt: skip
        struct.pack_into("=I", self._memory, self._offset, (odd + 1) & 0xFFFFFFFF)

    def read(self) -> Beat | None:
        """The last complete record; None if a write never stopped overlapping the read."""
        for _ in range(_READ_ATTEMPTS):
            seq, pid, tick, requests, conns, in_flight, flags = _RECORD.unpack_from(
                self._memory, self._offset
            )
            if seq & 1:
                continue
            if struct.unpack_from("=I", self._memory, self._offset)[0] == seq:
                return Beat(pid, tick, requests, conns, in_flight, bool(flags & DRAINING))
        return None

    def clear(self) -> None:
        """Forget the previous owner (the master, before giving the slot to a new worker)."""
        self._memory[self._offset : self._offset + SLOT_SIZE] = bytes(SLOT_SIZE)


class HeartbeatTable:
    """Shared memory with one :class:`HeartbeatSlot` per live worker."""

    def __init__(self, capacity: int = DEFAULT_CAPACITY) -> None:
        self.capacity = capacity
        self._memory = mmap.mmap(-1, capacity * SLOT_SIZE)  # anonymous and MAP_SHARED

    def slot(self, index: int) -> HeartbeatSlot:
        if not 0 <= index < self.capacity:
            raise IndexError(f"heartbeat slot {index} out of range 0..{self.capacity - 1}")
        return HeartbeatSlot(self._memory, index)

    def close(self) -> None:
        self._memory.close()


# --- The worker's side ------------------------------------------------------------------


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

    def tick(self) -> None:
        now = time.monotonic()
        state = self.state
        if self.slot is not None:
            beat = Beat(
                self.pid, now, state.requests_served, len(state.connections),
                max(0, state.in_flight), state.draining,
            )  # fmt: skip
            self.slot.write(beat)
        if self.request_timeout > 0:
            self._check_requests(now)

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
