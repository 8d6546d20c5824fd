"""Per-stream state of the HTTP/2 core, and the fair scheduler that frames response DATA.

A ``Stream`` exists from the Request event the adapter receives until the adapter has
finished it (``end_stream`` or ``reset_stream``) and its last byte is framed or dropped:
that span is what counts against SETTINGS_MAX_CONCURRENT_STREAMS, so a client that resets
streams cannot start more application calls than the limit (Go's answer to rapid reset).

Response bodies wait in a per-stream queue; ``frame_data`` turns them into DATA frames
round-robin, one quantum per stream per round, within the stream window, the connection
window and the peer's SETTINGS_MAX_FRAME_SIZE (RFC 9113 §6.9, §4.2).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable

from h2.connection import H2Connection as _H2
from h2.errors import ErrorCodes

__all__ = ["Stream", "frame_data"]

# The most a stream sends per round of the scheduler (also the RFC default frame size): a
# large download interleaves with small responses at this grain.
QUANTUM = 16384


class Stream:
    """One request/response exchange the adapter knows about."""

    __slots__ = (
        "app_done",
        "buffered",
        "chunks",
        "end_pending",
        "ended",
        "expected",
        "head_request",
        "id",
        "mark_sent",
        "mark_time",
        "no_body",
        "received",
        "remaining",
        "request_open",
        "reset",
        "scheduled",
        "sent",
        "status",
        "unacked",
    )

    def __init__(self, stream_id: int, head_request: bool, expected: int | None) -> None:
        self.id = stream_id
        self.head_request = head_request
        # Request side.
        self.request_open = True  # the client may still send DATA (no END_STREAM yet)
        self.expected = expected  # the request's content-length, checked against DATA
        self.received = 0
        self.unacked = 0  # body bytes handed to the adapter, not yet acknowledged
        # Response side.
        self.app_done = False  # the adapter sent end_stream or reset the stream
        self.status = 0  # final status code once sent
        self.no_body = False
        self.remaining: int | None = None  # declared Content-Length still to send
        self.chunks: deque[memoryview] = deque()
        self.buffered = 0
        self.end_pending = False  # END_STREAM goes out once the queue is empty
        self.ended = False  # END_STREAM framed (or, short of its length, RST_STREAM)
        self.reset = False  # reset by either side: nothing more is sent or delivered
        self.scheduled = False  # in the scheduler's ready queue
        self.sent = 0  # DATA payload bytes framed
        self.mark_sent = 0  # ``sent`` when progress was last observed (stalled_streams)
        self.mark_time: float | None = None

    @property
    def pending(self) -> bool:
        """Something is waiting to be framed."""
        return not (self.ended or self.reset) and (self.buffered > 0 or self.end_pending)

    @property
    def short(self) -> bool:
        """The body ended before its declared Content-Length (RFC 9113 §8.1.1)."""
        return bool(self.remaining)

    def queue(self, data: bytes) -> None:
        if data:
            self.chunks.append(memoryview(data))
            self.buffered += len(data)

    def take(self, size: int) -> bytes:
        """Remove and return the first ``size`` queued bytes."""
        parts: list[memoryview] = []
        need = size
        chunks = self.chunks
        while need:
            chunk = chunks[0]
            if len(chunk) <= need:
                parts.append(chunks.popleft())
                need -= len(chunk)
            else:
                parts.append(chunk[:need])
                chunks[0] = chunk[need:]
                need = 0
        self.buffered -= size
        self.sent += size
        return parts[0].tobytes() if len(parts) == 1 else b"".join(parts)

    def drop_output(self) -> None:
        self.chunks.clear()
        self.buffered = 0
        self.end_pending = False


def frame_data(conn: _H2, ready: deque[Stream], finished: Callable[[Stream], None]) -> None:
    """Frame queued response data fairly; ``ready`` holds the streams with output pending.

    Streams blocked by flow control stay in ``ready``; a stream whose END_STREAM (or, when
    its body fell short of its Content-Length, its RST_STREAM) was framed is passed to
    ``finished``.
    """
    size = min(conn.max_outbound_frame_size, QUANTUM)
    progress = True
    while progress and ready:
        progress = False
        for _ in range(len(ready)):
            stream = ready.popleft()
            if stream.pending and _send_some(conn, stream, size):
                progress = True
            if stream.pending:
                ready.append(stream)
                continue
            stream.scheduled = False
            if stream.ended:
                finished(stream)


def _send_some(conn: _H2, stream: Stream, size: int) -> bool:
    """Frame up to ``size`` bytes of ``stream``; False when flow control allows nothing."""
    sid = stream.id
    if stream.buffered:
        window = min(
            conn.outbound_flow_control_window, conn.streams[sid].outbound_flow_control_window
        )
        size = min(size, window, stream.buffered)
        if size <= 0:
            return False  # a window can even be negative (RFC 9113 §6.9.2)
        chunk = stream.take(size)
        if stream.buffered or not stream.end_pending:
            conn.send_data(sid, chunk)
            return True
        if not stream.short:
            conn.send_data(sid, chunk, end_stream=True)  # the last chunk carries END_STREAM
            stream.end_pending = False
            stream.ended = True
            return True
        conn.send_data(sid, chunk)
    # The queue is empty and the application has ended its response.
    if stream.short:
        # Fewer bytes than its Content-Length: the client must not take it as complete.
        conn.reset_stream(sid, ErrorCodes.INTERNAL_ERROR)
        stream.reset = True
    else:
        conn.end_stream(sid)  # an empty DATA frame needs no window (RFC 9113 §6.9.1)
    stream.end_pending = False
    stream.ended = True
    return True
