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

The rest of each slot, outside the seqlock record, is the worker's *accepting load*
(:class:`LoadBoard`): which listeners it accepts on, the connections it holds, how many
times it has looked at its listeners (its "turns"), whether it is accepting at all.
Workers write it as it changes (at each accept and close, not once per tick), and read
each other's to share the load (``worker/balance.py``). Only the slot's owner writes it,
the four 32-bit fields in one aligned 16-byte copy; a reader may see a value one change
old, or fields from two successive writes, both harmless to an estimate of load: no
seqlock.

This module is neutral ground: the worker imports it, the master imports it, and it
imports neither of them, not even for type checking (issue 11).
"""

from __future__ import annotations

import mmap
import struct
from dataclasses import dataclass
from typing import Any

# The record: seq, pid, tick, requests, connections, in-flight, flags (the original
# 36 bytes), then what ``preforkd status``/``top`` and the metrics read: HTTP/2
# connections, requests per second, the oldest running request (start, method, path),
# requests by protocol and status class, the request-duration histogram and its sum,
# and request/response body bytes.
PROTOCOLS = ("h1", "h2")  # the order of the per-protocol counters
STATUS_CLASSES = ("1xx", "2xx", "3xx", "4xx", "5xx")
# Request-duration histogram bucket bounds in seconds (Prometheus' defaults); the last
# bucket, +Inf, is implied.
DURATION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
_BY_STATUS = len(PROTOCOLS) * len(STATUS_CLASSES)
_HISTOGRAM = len(DURATION_BUCKETS) + 1
METHOD_BYTES = 16
PATH_BYTES = 160
_RECORD = struct.Struct(f"=IIdQIIIIdd{METHOD_BYTES}s{PATH_BYTES}s{_BY_STATUS}Q{_HISTOGRAM}QdQQ")
SLOT_SIZE = 512  # a whole number of cache lines per slot: workers never share one
# listener group, connections (open + being started), turns (mod 2**32), accepting
_LOAD = struct.Struct("=IIII")
LOAD_OFFSET = SLOT_SIZE - _LOAD.size  # the end of the slot, after the seqlock record
assert _RECORD.size <= LOAD_OFFSET
_WORD = 4
_SCAN_CHUNK = 64  # slots read at a time when looking for the used ones
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
    connections: int  # open connections (all protocols)
    in_flight: int  # application calls running
    draining: bool
    h2_connections: int = 0  # of ``connections``, those speaking HTTP/2
    rate: float = 0.0  # requests per second over the last few seconds
    oldest_start: float = 0.0  # time.monotonic() the oldest running call began; 0: none
    oldest_method: str = ""
    oldest_path: str = ""  # truncated to PATH_BYTES
    # Requests answered by the application, by protocol then status class
    # (PROTOCOLS x STATUS_CLASSES, flattened).
    by_status: tuple[int, ...] = (0,) * _BY_STATUS
    durations: tuple[int, ...] = (0,) * _HISTOGRAM  # per bucket, not cumulative
    duration_sum: float = 0.0  # seconds
    body_in: int = 0  # request body bytes the application read
    body_out: int = 0  # response body bytes sent


def _text(value: str, size: int) -> bytes:
    data = value.encode("utf-8", "replace")[:size]
    return data.decode("utf-8", "ignore").encode("utf-8")  # never cut a character


def _untext(data: bytes) -> str:
    return data.rstrip(b"\0").decode("utf-8", "replace")


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
            beat.connections, beat.in_flight, flags, beat.h2_connections, beat.rate,
            beat.oldest_start, _text(beat.oldest_method, METHOD_BYTES),
            _text(beat.oldest_path, PATH_BYTES), *beat.by_status, *beat.durations,
            beat.duration_sum, beat.body_in, beat.body_out,
        )  # fmt: skip
        struct.pack_into("=I", self._memory, self._offset, (odd + 1) & 0xFFFFFFFF)

    def read(self) -> Beat | None:
        """The last complete record; None if a write never stopped overlapping the read."""
        for _ in range(_READ_ATTEMPTS):
            fields = _RECORD.unpack_from(self._memory, self._offset)
            seq = fields[0]
            if seq & 1:
                continue
            if struct.unpack_from("=I", self._memory, self._offset)[0] == seq:
                return _beat(fields)
        return None

    def clear(self) -> None:
        """Forget the previous owner (the master, before giving the slot to a new worker)."""
        self._memory[self._offset : self._offset + SLOT_SIZE] = bytes(SLOT_SIZE)

    def sibling(self, index: int) -> HeartbeatSlot:
        """Another slot of the same table (a worker reading its peers' heartbeats)."""
        if not 0 <= index < len(self._memory) // SLOT_SIZE:
            raise IndexError(f"heartbeat slot {index} out of range")
        return HeartbeatSlot(self._memory, index)

    def board(self) -> LoadBoard:
        """The accepting load of every slot of this table."""
        return LoadBoard(self._memory)


class LoadBoard:
    """The accepting load part of every slot (see the module's docstring)."""

    def __init__(self, memory: mmap.mmap) -> None:
        self._memory = memory

    def publish(self, index: int, group: int, load: int, turns: int, accepting: bool) -> None:
        """Write slot ``index``'s load (only the slot's owner calls this)."""
        _LOAD.pack_into(
            self._memory, index * SLOT_SIZE + LOAD_OFFSET,
            group, load, turns & 0xFFFFFFFF, accepting,
        )  # fmt: skip

    def read(self, index: int) -> tuple[int, int, int, int]:
        """(group, load, turns, accepting) of slot ``index``."""
        return _LOAD.unpack_from(self._memory, index * SLOT_SIZE + LOAD_OFFSET)

    def occupied(self) -> list[int]:
        """Indexes of the slots that hold a worker's record (a non-zero pid)."""
        # The master hands out the lowest free slot, so the slots ever used are a prefix
        # of the table: stop at the first chunk of never-used ones instead of reading
        # thousands of slots. (A slot is zeroed only just before its next worker writes
        # it: never a whole chunk at once.)
        found: list[int] = []
        step = SLOT_SIZE // _WORD
        with memoryview(self._memory) as raw, raw.cast("I") as words:
            for first in range(0, len(words) // step, _SCAN_CHUNK):
                with words[first * step + 1 : (first + _SCAN_CHUNK) * step : step] as pids:
                    column = pids.tolist()
                if not any(column):
                    break
                found.extend(first + i for i, pid in enumerate(column) if pid)
        return found


def _beat(fields: tuple[Any, ...]) -> Beat:
    (_, pid, tick, requests, conns, in_flight, flags, h2_conns, rate, oldest_start,
     method, path) = fields[:12]  # fmt: skip
    rest = fields[12:]
    by_status = rest[:_BY_STATUS]
    durations = rest[_BY_STATUS : _BY_STATUS + _HISTOGRAM]
    duration_sum, body_in, body_out = rest[_BY_STATUS + _HISTOGRAM :]
    return Beat(
        pid, tick, requests, conns, in_flight, bool(flags & DRAINING), h2_conns, rate,
        oldest_start, _untext(method), _untext(path), by_status, durations,
        duration_sum, body_in, body_out,
    )  # fmt: skip


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
