"""Per-stream state of the HTTP/2 core (RFC 9113 §5.1), and the memory of closed streams.

A ``Stream`` exists from the Request event the adapter receives until the adapter has
finished it (``end_stream`` or ``reset_stream``) and its last byte is framed or dropped:
that span is what counts against SETTINGS_MAX_CONCURRENT_STREAMS, so a client that resets
streams cannot start more application calls than the limit (Go's answer to rapid reset).

The states of §5.1, for a server that never pushes (so never "reserved"):

* idle: an id above the highest the client has opened (``ClosedStreams.highest``);
* open / half-closed: a ``Stream`` whose wire side is not over. ``request_open`` is false
  once the client's END_STREAM arrived (half-closed (remote)); ``ended`` once ours was
  framed (half-closed (local));
* closed: both ends done, or reset by either side. The wire side is then recorded in
  ``ClosedStreams`` with how it closed, because a late frame is answered by that (§5.1):
  after our RST_STREAM it is ignored (the client may have sent it before it saw ours);
  after the client's RST_STREAM it is a stream error STREAM_CLOSED; after END_STREAM both
  ways it is a connection error STREAM_CLOSED.

Response bodies wait in a per-stream queue until the connection frames them (its DATA
scheduler, within the windows of §6.9).
"""

from __future__ import annotations

import enum
from collections import deque

from preforkd.proto.h2.flow import ReceiveWindow

__all__ = ["CLOSED_STREAM_MEMORY", "Closed", "ClosedStreams", "Stream"]

# How many closed streams a connection remembers, with how each closed. A stream older than
# that is still known to be closed (its id is below the highest opened), only not how: its
# late frames are ignored, as after our own RST_STREAM. 256 records of ~100 bytes bound the
# memory of a connection whatever its age (issue 10: h2 kept 65,536 of ~150 bytes); a
# client's late frames arrive within a round trip, long before 256 newer streams close.
CLOSED_STREAM_MEMORY = 256


class Closed(enum.Enum):
    """How a stream closed (RFC 9113 §5.1), which decides how a late frame is answered."""

    RESET_BY_US = 1  # late frames are ignored
    RESET_BY_PEER = 2  # a stream error STREAM_CLOSED
    ENDED = 3  # END_STREAM both ways: a connection error STREAM_CLOSED


class ClosedStreams:
    """The wire state of streams no longer open: a bounded record of the recent ones."""

    __slots__ = ("_recent", "highest")

    def __init__(self) -> None:
        self._recent: dict[int, Closed] = {}
        self.highest = 0  # the highest stream id the client has opened (§5.1.1)

    def add(self, stream_id: int, how: Closed) -> None:
        recent = self._recent
        recent.pop(stream_id, None)
        recent[stream_id] = how
        if len(recent) > CLOSED_STREAM_MEMORY:
            del recent[next(iter(recent))]

    def get(self, stream_id: int) -> Closed | None:
        return self._recent.get(stream_id)

    def __len__(self) -> int:
        return len(self._recent)


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
        "recv_window",
        "remaining",
        "request_open",
        "reset",
        "scheduled",
        "send_window",
        "sent",
        "status",
        "unacked",
    )

    def __init__(
        self,
        stream_id: int,
        head_request: bool,
        expected: int | None,
        recv_window: int,
        send_window: int,
    ) -> None:
        self.id = stream_id
        self.head_request = head_request
        # Request side.
        self.request_open = True  # the client may still send DATA (no END_STREAM yet)
        self.expected = expected  # the request's content-length, checked against DATA
        self.received = 0
        self.unacked = 0  # body bytes handed to the adapter, not yet acknowledged
        self.recv_window = ReceiveWindow(recv_window)  # what the client may still send
        # Response side.
        self.app_done = False  # the adapter sent end_stream or reset the stream
        self.status = 0  # final status code once sent
        self.no_body = False
        self.remaining: int | None = None  # declared Content-Length still to send
        self.chunks: deque[memoryview] = deque()
        self.buffered = 0
        self.end_pending = False  # END_STREAM goes out once the queue is empty
        self.ended = False  # END_STREAM framed: half-closed (local)
        self.reset = False  # reset by either side: nothing more is sent or delivered
        self.scheduled = False  # in the connection's ready order
        self.send_window = send_window  # RFC 9113 §6.9: may go below zero (§6.9.2)
        self.sent = 0  # DATA payload bytes framed
        self.mark_sent = 0  # the progress last observed by stalled_streams
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
