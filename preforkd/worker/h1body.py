"""HTTP/1.1 request bodies read straight into the worker's body buffers.

Why. Through ``asyncio.Protocol.data_received`` the loop makes a new bytes object of every
read: for an upload that is a copy of each body byte on top of the kernel's copy and the
copy into what the app's ``wsgi.input.read()`` returns (memcpy was a quarter of the
worker's CPU on 1 MiB uploads, bench/PROFILE.md). An ``asyncio.BufferedProtocol`` has the
transport read into a buffer of ours instead, and ``wsgi.input`` keeps views of it.

Theory of operation. :class:`H1Protocol` (worker/connection.py) stays a plain Protocol:
request heads arrive as bytes, as llhttp and the native head parser want them, with no
extra call per read on the small-request path. Once a Content-Length body with at least
:data:`BODY_READ_MIN` bytes still to come is under way, the connection hands its transport
a :class:`BodyReader` (``transport.set_protocol``; asyncio's and uvloop's transports, plain
and TLS, switch between the two kinds of protocol at any time). Each read goes into the
free end of a 256 KiB buffer, never past the body's end (so the next request's head is
read as bytes again), and becomes a ``Data`` event holding a memoryview of exactly those
bytes. When the body is complete the H1Protocol takes the transport back.

The buffers (:class:`BodyBuffers`, one pool per worker): a view handed to ``wsgi.input``
must stay valid until the app has read it, so a buffer is written again only once no view
of it is left. That is known without any report from the app thread: every view of a
buffer holds a reference to it (each ``memoryview(buf)`` holds one, its slices share it),
so a buffer whose reference count is back to what its holder alone accounts for has no
view left (:func:`_unshared`, calibrated at import). The check errs one way only: a
reference we do not know of (a transport still holding its last read's view, a traceback)
makes a buffer look busy, never free. A connection writes into its buffer's free end and
starts over at its front whenever the buffer is unshared (the app has read everything in
it), which with an app that keeps up is most reads; a full buffer with unread bytes goes
back to the pool, which hands it out again once its views are gone. Recycling matters: a
fresh 256 KiB ``bytearray`` is zeroed, and a freed one comes back as page faults.

Memory stays bounded as before: reading pauses when ``wsgi.input`` holds more than the
body buffer setting (the views pin at most that much plus one read, i.e. a few buffers per
uploading connection), a connection gives its buffer back when its body ends, and the pool
keeps at most :data:`MAX_IDLE` idle buffers, fewer each tick once uploads stop.
"""

from __future__ import annotations

import asyncio
import sys
from typing import Protocol

from preforkd.proto.h1 import H1Connection
from preforkd.proto.h1_body import VIEW_MIN

# Recycling a buffer hinges on CPython's reference counts (see _unshared): elsewhere a
# buffer could look free while the app has yet to read a view of it, so bodies keep
# arriving through data_received as bytes.
ENABLED = sys.implementation.name == "cpython"
BUFFER_SIZE = 256 * 1024  # uvloop's own read buffer; reads rarely bring more at once
# A body with less than this still to come is read through data_received as before: the
# two switches of protocol (a re-registration of the socket each) cost more than the copy.
BODY_READ_MIN = 64 * 1024
# With less room than this left at a buffer's end, the next read takes another buffer
# (a read into a small rest would be a short read, one more system call per buffer).
_MIN_ROOM = 64 * 1024
# Idle buffers a worker keeps at most (16 MiB): as many as concurrent uploads had in use,
# each holding one to write into and a few with unread pieces. Once uploads stop, the
# ticker halves them each tick (trim), so an idle worker soon holds none.
MAX_IDLE = 64
_HELD_MAX = 64  # buffers given back with views left, watched until they are unshared


class _Slot:
    """Holds one buffer: the only reference to it apart from views and the transport."""

    __slots__ = ("buf",)

    def __init__(self, size: int) -> None:
        self.buf = bytearray(size)


def _refs(slot: _Slot) -> int:
    return sys.getrefcount(slot.buf)


# The count of a buffer held by its slot alone, measured the way _unshared measures (the
# slot's reference and getrefcount's argument, whatever the interpreter adds).
_ALONE = _refs(_Slot(1))


def _unshared(slot: _Slot) -> bool:
    """No view of the slot's buffer is left (nothing can read what it holds)."""
    return _refs(slot) <= _ALONE


class BodyBuffers:
    """A worker's pool of body buffers (loop thread only)."""

    __slots__ = ("_free", "_held", "_used", "size")

    def __init__(self, size: int = BUFFER_SIZE) -> None:
        self.size = size
        self._free: list[_Slot] = []
        self._held: list[_Slot] = []  # given back while views of them were left
        self._used = False  # a buffer was acquired since the last trim

    def acquire(self) -> _Slot:
        """A buffer no view refers to: one given back whose views are gone by now, an
        idle one, or a new one."""
        self._used = True
        held = self._held
        for index, slot in enumerate(held):  # the oldest first: the likeliest read
            if _unshared(slot):
                del held[index]
                return slot
        free = self._free
        return free.pop() if free else _Slot(self.size)

    def release(self, slot: _Slot) -> None:
        """The connection writes no more into ``slot``; its views may still be unread."""
        if _unshared(slot):
            if len(self._free) < MAX_IDLE:
                self._free.append(slot)
        elif len(self._held) < MAX_IDLE:
            self._held.append(slot)
        # else: dropped; its views keep it alive until they go, then Python frees it.

    def trim(self) -> None:
        """(Each tick.) Buffers whose views are gone become idle; without uploads since
        the last tick, half the idle ones are let go."""
        held, self._held = self._held, []
        for slot in held:
            self.release(slot)
        if not self._used:
            del self._free[len(self._free) // 2 :]
        self._used = False

    @property
    def idle(self) -> int:
        """Buffers ready for reuse (tests)."""
        return len(self._free)


class _Connection(Protocol):
    """What a BodyReader needs of its H1Protocol (worker/connection.py, which imports us)."""

    parser: H1Connection
    closed: bool

    def body_received(self, data: bytes | memoryview) -> None: ...
    def buffered_read_done(self, body_ended: bool) -> None: ...
    def data_received(self, data: bytes) -> None: ...
    def eof_received(self) -> bool: ...
    def connection_lost(self, exc: Exception | None) -> None: ...
    def pause_writing(self) -> None: ...
    def resume_writing(self) -> None: ...


class BodyReader(asyncio.BufferedProtocol):
    """Stands in for an :class:`H1Protocol` as its transport's protocol while a long
    Content-Length body arrives: reads go into body buffers (see the module docstring),
    everything else is the H1Protocol's."""

    __slots__ = ("_end", "_pool", "_slot", "conn")

    def __init__(self, conn: _Connection, pool: BodyBuffers) -> None:
        self.conn = conn
        self._pool = pool
        self._slot: _Slot | None = None
        self._end = 0  # where the next read goes in the slot's buffer

    def get_buffer(self, sizehint: int) -> memoryview:
        # Never past the body's end (what follows it is parsed from a copy); between
        # requests, a head and as much of its body as the buffer takes.
        want = self.conn.parser.body_remaining or BUFFER_SIZE
        slot = self._slot
        if slot is None:
            slot = self._slot = self._pool.acquire()
            self._end = 0
        elif _unshared(slot):
            self._end = 0  # all read by the app: start over at the front
        elif len(slot.buf) - self._end < min(want, _MIN_ROOM):
            self._pool.release(slot)
            slot = self._slot = self._pool.acquire()
            self._end = 0
        start = self._end
        return memoryview(slot.buf)[start : min(len(slot.buf), start + want)]

    def buffer_updated(self, nbytes: int) -> None:
        slot = self._slot
        assert slot is not None
        conn = self.conn
        buf = slot.buf
        start = self._end
        end = start + nbytes
        remaining = conn.parser.body_remaining
        if not remaining:
            start = self._head(buf, start, end)
            remaining = conn.parser.body_remaining
            if start == end or not remaining or conn.closed:
                conn.buffered_read_done(False)
                return
        if end - start < VIEW_MIN:
            # A short read is copied, and its room is written again by the next read: a
            # client trickling its body must not pin buffers, nor make wsgi.input hold a
            # view object (and its buffer record, ~250 bytes) per byte or so it sends.
            conn.body_received(bytes(memoryview(buf)[start:end]))
        else:
            self._end = end
            # A view of its own (not a slice of get_buffer's): holds one reference to
            # the buffer for as long as any piece of it is unread.
            conn.body_received(memoryview(buf)[start:end])
        conn.buffered_read_done(end - start == remaining)

    def _head(self, buf: bytearray, start: int, end: int) -> int:
        """Between requests (right after a body): pass the read on as bytes, but leave a
        long body after its head where it was read. Returns where the body starts (or
        ``end``: all passed on)."""
        cut = buf.find(b"\r\n\r\n", start, end) + 4
        if 4 <= cut <= end - VIEW_MIN:
            head = bytes(memoryview(buf)[start:cut])
            # Only a head that cannot switch protocols (Upgrade: h2c hands the bytes after
            # it to HTTP/2, which must get them in the same call) is split from its read.
            if b"upgrade" not in head.lower():
                self.conn.data_received(head)
                if self.conn.parser.body_remaining or self.conn.closed:
                    return cut
                start = cut
        self.conn.data_received(bytes(memoryview(buf)[start:end]))
        return end

    def give_back(self) -> None:
        """The body is over (or the connection): the buffer returns to the pool."""
        slot, self._slot = self._slot, None
        if slot is not None:
            self._pool.release(slot)

    # Everything else is the connection's.
    def data_received(self, data: bytes) -> None:
        # (A transport that read before it saw the switch of protocol.)
        self.conn.data_received(data)

    def eof_received(self) -> bool:
        return self.conn.eof_received()

    def connection_lost(self, exc: Exception | None) -> None:
        self.give_back()
        self.conn.connection_lost(exc)

    def pause_writing(self) -> None:
        self.conn.pause_writing()

    def resume_writing(self) -> None:
        self.conn.resume_writing()
