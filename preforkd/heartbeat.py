"""The heartbeat table shared by the master and its workers.

Theory of operation. The master creates one :class:`HeartbeatTable` before it forks
anything: an anonymous ``MAP_SHARED`` mapping, so every worker forked afterwards sees the
same memory. The master gives each worker one slot (an index free among the live
workers, not the worker's slot number: during a reload two generations each have a
"worker 1"). The worker's event loop writes its slot at every tick (``worker/watchdog.py``);
the master only reads, except to clear a slot before handing it to a new worker. One
writer per slot, so no lock: a sequence counter (odd while a write is in progress, a
seqlock) lets the reader retry instead of using a half-written record.

``tick`` is ``time.monotonic()``: CLOCK_MONOTONIC is one clock for the whole machine, so
the master compares it with its own. A worker whose tick is older than ``--timeout`` has
a blocked event loop; the master sends it SIGABRT, which the handler installed by
``install_stack_dumper`` (``worker/watchdog.py``) turns into a dump of every thread's
stack in the error log before the worker dies of it; SIGKILL follows if it is still
there (stopped, or the handler itself stuck).

This module is neutral ground: the worker imports it, the master imports it, and it
imports neither of them, not even for type checking (issue 11).
"""

from __future__ import annotations

import mmap
import struct
from dataclasses import dataclass

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
