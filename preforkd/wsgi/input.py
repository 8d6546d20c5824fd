"""wsgi.input: the request body, filled by the event loop and read by an app thread.

Theory of operation. The loop thread calls ``feed``/``feed_eof``/``feed_error``; the app
thread calls ``read``/``readline``/iteration and blocks while no data is buffered. The
buffer is bounded: ``feed`` returns True once more than ``high_water`` bytes wait, and the
protocol adapter then stops reading from the socket (HTTP/1.1) or stops reopening the
receive window (HTTP/2). As the app consumes data, it reports the consumed byte count to
the loop through ``on_consumed`` (scheduled with call_soon_threadsafe, in batches) so the
adapter can resume. The first time the app wants data that is not there, ``on_consumed(0)``
is reported too: that is the moment an HTTP/1.1 adapter sends "100 Continue"
(RFC 9110 §10.1.1: the server should send it only when it intends to read the body).

A blocked reader waits on its own thread's fd (wsgi/wakeup.py), not on a Condition: the
loop wakes it with a write made after letting the GIL go, so the woken thread can take
the GIL at once instead of waking only to find it held.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable, Iterator

from preforkd.errors import ClientDisconnected
from preforkd.wsgi.wakeup import ThreadWaker, current_waker

# A whole-body read is served in one piece; a line without a newline may grow this large
# before readline() gives up and returns what it has (the app asked for a line, not the body).
DEFAULT_HIGH_WATER = 256 * 1024

Schedule = Callable[[Callable[[], None]], None]


class InputStream:
    def __init__(
        self,
        schedule: Schedule,
        on_consumed: Callable[[int], None],
        high_water: int = DEFAULT_HIGH_WATER,
        report_every: int | None = None,
        *,
        windowed: bool = True,
    ) -> None:
        self._schedule = schedule  # runs a callable on the loop thread
        self._on_consumed = on_consumed
        self._high_water = high_water
        # Consumption is reported in batches of this many bytes (and before blocking).
        self._report_threshold = report_every or max(1, high_water // 4)
        self._windowed = windowed  # False: HTTP/1.1's fewer reports (see _report)
        # A feed went over high_water (the adapter paused reading) and the reader has not
        # yet taken the buffer down to half (not windowed: when it does, it reports).
        self._over = False
        # Received chunks are kept as they came (no copy into one buffer); _offset is how
        # much of the first one has been read. A read copies only what it returns. A chunk
        # may be a memoryview of a buffer the loop reuses once no view of it is left
        # (worker/h1body.py): a view is kept only while its bytes are unread.
        self._chunks: deque[bytes | memoryview] = deque()
        self._offset = 0
        self._size = 0  # bytes buffered
        # App threads blocked in a read (one, unless an app shares wsgi.input between
        # threads), each woken through its own fd (wsgi/wakeup.py says why, not a
        # Condition). Guarded by the lock; a wake is sent after releasing it.
        self._waiters: list[ThreadWaker] = []
        self._want = 1  # while it is: the buffered bytes that let its read return
        self._lock = threading.Lock()
        self._eof = False
        self._error: BaseException | None = None
        self._unreported = 0  # bytes consumed but not yet reported to the loop
        self._demanded = False  # the app has asked for data at least once
        self.bytes_read = 0

    # --- loop side ----------------------------------------------------------------------
    def feed(self, data: bytes | memoryview, wake: bool = True) -> bool:
        """Buffer body bytes; True when the buffer is over its high-water mark.

        ``data`` is kept, not copied: a memoryview must stay valid until it is read.

        ``wake=False``: the caller has more for this stream from the same network read
        and calls :meth:`wake` after the last piece. Waking the reading thread once per
        read, not once per 16 KiB HTTP/2 DATA frame, saves a thread switch (and a tussle
        for the GIL) per frame."""
        with self._lock:
            self._chunks.append(data)
            self._size += len(data)
            over = self._size > self._high_water
            if over:
                self._over = True
            waker = self._waiters.pop() if wake and self._waiters else None
        if waker is not None:
            waker.wake()
        return over

    def feed_all(self, pieces: list[bytes | memoryview]) -> None:
        """``feed(piece, wake=False)`` for each piece, under one lock: HTTP/2 hands over
        a stream's DATA payloads of one network read together, then calls ``wake``."""
        with self._lock:
            self._chunks.extend(pieces)
            self._size += sum(map(len, pieces))

    def wake(self, receivable: int | None = None) -> None:
        """Wake the reading thread, if it waits (after feeds with ``wake=False``).

        ``receivable`` (HTTP/2): how many more body bytes the peer may send before the
        receive windows must reopen. The reader is then woken only when its read can
        complete, or when it must consume what is buffered so that the windows reopen (the
        peer cannot send the rest otherwise): about one wake per read instead of one per
        network read, each of which costs thread switches and a handover of the GIL."""
        with self._lock:
            if not self._waiters:
                return
            size = self._size
            if not (
                receivable is None
                or size >= self._want
                or (size and self._want - size > receivable)
            ):
                return
            waker = self._waiters.pop()
        waker.wake()

    def feed_eof(self) -> None:
        with self._lock:
            self._eof = True
            waiters, self._waiters = self._waiters, []
        for waker in waiters:
            waker.wake()

    def feed_error(self, exc: BaseException) -> None:
        """The body cannot be completed (client gone, short body): reads will raise."""
        with self._lock:
            if not self._eof:
                self._error = exc
            waiters, self._waiters = self._waiters, []
        for waker in waiters:
            waker.wake()

    def detach(self) -> None:
        """The request is over (loop thread): stop reporting to the connection, which
        also breaks the stream ↔ connection reference cycle so refcounting frees both."""
        self._on_consumed = _ignore_consumed

    @property
    def buffered(self) -> int:
        return self._size

    @property
    def waiting(self) -> bool:
        """An app thread is blocked in a read of this stream."""
        return bool(self._waiters)

    @property
    def over_high_water(self) -> bool:
        """(Not windowed.) Reading must stay paused: a feed went over high_water and the
        reader has not yet taken the buffer down to half. The adapter asks this when a
        report arrives rather than looking at ``buffered``: the rest of a read may have
        been fed after the report was sent, and no second report would come for it."""
        return self._over

    @property
    def complete(self) -> bool:
        return self._eof

    @property
    def demanded(self) -> bool:
        return self._demanded

    # --- app side -----------------------------------------------------------------------
    def _wait_for_data(self, want: int) -> None:
        """Block until the buffer grows, EOF or an error. Caller holds the lock.

        ``want``: the buffered bytes that would let the read return (see ``wake``)."""
        # Everything consumed is reported before blocking: the loop may need it to reopen
        # the windows. A report of nothing only tells the loop that the app now waits: at
        # its first read (100 Continue), or with bytes buffered (it may have to be woken).
        self._report(force=True, empty=not self._demanded or self._size > 0)
        self._want = want
        waker = current_waker()
        self._waiters.append(waker)
        self._lock.release()
        try:
            waker.wait()  # a wake sent since the append is not lost: it stays in the fd
        finally:
            self._lock.acquire()
            if waker in self._waiters:  # woken otherwise (an interrupted wait)
                self._waiters.remove(waker)

    def _report(self, force: bool = False, empty: bool = False) -> None:
        """Tell the loop how much was consumed, in batches, and always before blocking;
        ``empty``: even if that is nothing.

        Not windowed (HTTP/1.1): TCP alone holds the client back, which sends until the
        adapter pauses reading (the buffer over high_water) whatever the app consumes. So
        the loop hears only the first unmet demand (100 Continue) and when reading may
        resume (the buffer at half after going over), not every batch consumed: each
        report is a cross-thread call and a loop callback."""
        if not self._windowed:
            resume = self._over and self._size <= self._high_water // 2
            if resume or (force and not self._demanded):
                if resume:
                    self._over = False
                n, self._unreported = self._unreported, 0
                self._demanded = True
                self._schedule(lambda: self._on_consumed(n))
            return
        if force or self._unreported >= self._report_threshold:
            n, self._unreported = self._unreported, 0
            if n or empty:
                self._demanded = True
                self._schedule(lambda: self._on_consumed(n))

    def _take(self, n: int) -> bytes:
        """Remove and return the next ``n`` buffered bytes (n <= self._size)."""
        parts: list[bytes | memoryview] = []
        self._take_parts(n, parts)
        return _joined(parts)

    def _take_parts(self, n: int, parts: list[bytes | memoryview]) -> None:
        """Remove the next ``n`` buffered bytes (n <= self._size), appended to ``parts``
        without copying: whole chunks as they are, the rest as memoryviews. The caller
        copies once, into what it returns (``_joined``), however many waits it took."""
        chunks, offset, remaining = self._chunks, self._offset, n
        while remaining:
            chunk = chunks[0]
            end = offset + remaining
            if offset or end < len(chunk):
                piece = memoryview(chunk)[offset:end]
                parts.append(piece)
                offset += len(piece)
                remaining -= len(piece)
            else:
                parts.append(chunk)
                offset = len(chunk)
                remaining -= offset
            if offset == len(chunk):
                chunks.popleft()
                offset = 0
        self._offset = offset
        self._size -= n
        self._unreported += n
        self.bytes_read += n

    def _find_newline(self, limit: int) -> int:
        """Index of the first b"\\n" among the first ``limit`` buffered bytes, or -1."""
        seen = 0
        offset = self._offset
        chunks = self._chunks
        for index in range(len(chunks)):
            chunk = chunks[index]
            if type(chunk) is not bytes:
                # A memoryview has no find(): the chunk becomes bytes once (a readline
                # user pays the copy a read() user is spared), and its view is let go.
                chunk = chunks[index] = bytes(chunk)
            end = min(len(chunk), offset + limit - seen)
            found = chunk.find(b"\n", offset, end)
            if found >= 0:
                return seen + found - offset
            seen += end - offset
            if seen >= limit:
                return -1
            offset = 0
        return -1

    def _check_error(self) -> None:
        error = self._error
        if error is not None:
            if isinstance(error, ClientDisconnected):
                raise error  # BadRequestBody keeps its kind and status
            raise ClientDisconnected(str(error)) from error

    def read(self, size: int | None = -1) -> bytes:
        """Read ``size`` bytes, fewer only at the end of the body; all of it if negative.

        Data is taken out of the bounded buffer as it arrives, so asking for more than the
        high-water mark never stalls the producer."""
        remaining = None if size is None or size < 0 else size
        parts: list[bytes | memoryview] = []
        with self._lock:
            while True:
                if self._size and remaining != 0:
                    n = self._size if remaining is None else min(remaining, self._size)
                    self._take_parts(n, parts)
                    if remaining is not None:
                        remaining -= n
                if remaining == 0 or self._eof:
                    break
                self._check_error()
                self._wait_for_data(min(remaining or self._high_water, self._high_water))
            self._report()
        return _joined(parts)

    def readline(self, size: int | None = -1) -> bytes:
        # A line is capped at the buffer size: a client cannot make us hold an endless line.
        limit = self._high_water
        if size is not None and 0 <= size < limit:
            limit = size
        with self._lock:
            while True:
                end = self._find_newline(limit)
                if end >= 0:
                    line = self._take(end + 1)
                    break
                if self._size >= limit or self._eof:
                    line = self._take(min(limit, self._size))
                    break
                self._check_error()
                self._wait_for_data(self._size + 1)  # any new byte may end the line
            self._report()
        return line

    def readlines(self, hint: int | None = -1) -> list[bytes]:
        lines: list[bytes] = []
        total = 0
        for line in self:
            lines.append(line)
            total += len(line)
            if hint is not None and 0 < hint <= total:
                break
        return lines

    def __iter__(self) -> Iterator[bytes]:
        while line := self.readline():
            yield line


def _joined(parts: list[bytes | memoryview]) -> bytes:
    """The pieces as one bytes object: a whole chunk as it is, else one copy."""
    if len(parts) == 1 and type(parts[0]) is bytes:
        return parts[0]
    return b"".join(parts)


def _ignore_consumed(nbytes: int) -> None:
    pass


class EmptyInput(InputStream):
    """wsgi.input of a request without a body: always at its end. One instance serves
    every such request (it has no state), which spares a buffer and a lock each."""

    def __init__(self) -> None:  # no buffer, no lock: nothing ever changes
        self._waiters = []
        self._eof = True
        self._error = None
        self._demanded = False
        self._over = False
        self.bytes_read = 0

    def feed(self, data: bytes | memoryview, wake: bool = True) -> bool:
        raise AssertionError("a request without a body got body bytes")

    def feed_all(self, pieces: list[bytes | memoryview]) -> None:
        raise AssertionError("a request without a body got body bytes")

    def wake(self, receivable: int | None = None) -> None:
        pass

    def feed_eof(self) -> None:
        pass

    def feed_error(self, exc: BaseException) -> None:
        pass

    def detach(self) -> None:
        pass

    @property
    def buffered(self) -> int:
        return 0

    def read(self, size: int | None = -1) -> bytes:
        return b""

    def readline(self, size: int | None = -1) -> bytes:
        return b""


EMPTY_INPUT = EmptyInput()
