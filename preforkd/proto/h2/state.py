"""The state of one HTTP/2 server connection, and the actions every side of it shares.

``ConnectionState`` owns what a connection knows: its settings, the HPACK contexts, the
stream table (``streams``) and the records of closed streams, the windows (``flow``), the
flood budgets, the output buffer and the shutdown state. Its methods are the primitives
both the receiving side (receive.py) and the sending side (connection.py) act through:
resetting a stream, reopening windows, sending a head, releasing a finished stream,
failing the connection. The classes stack in one line, each adding one concern:
``ConnectionState`` -> ``Receiver`` (frames in) -> ``H2Connection`` (the adapter's API).

No IO, no clock, no threads: bytes, values and ``now`` in; events and bytes out.
"""

from __future__ import annotations

from itertools import chain

import preforkd.proto.h2.frames as frames
from preforkd.proto.events import Event, StreamReset
from preforkd.proto.h2.codec import MemoDecoder, MemoEncoder
from preforkd.proto.h2.fields import Fields
from preforkd.proto.h2.flow import ReceiveWindow
from preforkd.proto.h2.frames import HeaderBlock
from preforkd.proto.h2.priority import PriorityScheduler
from preforkd.proto.h2.scheduler import Scheduler
from preforkd.proto.h2.settings import (
    DEFAULT_WINDOW,
    MIN_FRAME,
    Budget,
    ErrorCodes,
    H2ProtocolError,
    H2Settings,
)
from preforkd.proto.h2.streams import Closed, ClosedStreams, Stream

__all__ = ["MAX_STREAM_ID", "PROBE_PING", "SHUTDOWN_PING", "ConnectionState", "list_size"]

MAX_STREAM_ID = 2**31 - 1
PROBE_PING = b"preforkd"  # PING payloads are 8 bytes (RFC 9113 §6.7)
SHUTDOWN_PING = b"shutdown"


class ConnectionState:
    """What one connection knows, and the actions both of its sides share."""

    def __init__(
        self,
        settings: H2Settings | None = None,
        server: bytes = b"preforkd",
        scheduler: Scheduler | None = None,
    ) -> None:
        self.settings = settings = settings or H2Settings()
        #: The Date field value for responses; the adapter keeps it current (e.g. from the
        #: worker's once-a-second clock) -- the core has no clock.
        self.date_header = b""
        self._server = server
        limit = settings.max_header_list_size
        # Up to twice the advertised header list size is decoded, so that a request that
        # is too large but well-formed gets 431 and the connection lives on; beyond that
        # the block is not decoded and the connection ends (see HeaderBlock).
        self._decoder = MemoDecoder(2 * limit)
        self._encoder = MemoEncoder()
        self._block_limit = 2 * limit
        self._reader = frames.FrameReader(settings.max_frame_size)
        self._block: HeaderBlock | None = None
        self._streams: dict[int, Stream] = {}
        self._wire = ClosedStreams()
        self._ready: dict[int, Stream] = {}  # streams with output pending, in ready order
        # RFC 9218: the DATA order follows the clients' priority signals (priority.py).
        self._scheduler: Scheduler = scheduler or PriorityScheduler(settings.max_concurrent_streams)
        self._out = bytearray()
        self._events: list[Event] = []
        # Flow control (RFC 9113 §6.9): the connection window we grant starts at the RFC
        # default and is raised by our first WINDOW_UPDATE (§6.9.2: SETTINGS cannot).
        self._recv_window = ReceiveWindow(settings.connection_window_size, DEFAULT_WINDOW)
        self._send_window = DEFAULT_WINDOW
        self._data_sent = 0  # DATA payload bytes framed on the connection (stalled_streams)
        # The client's settings that matter to what we send (§6.5.2 defaults).
        self._peer_initial_window = DEFAULT_WINDOW
        self._peer_max_frame = MIN_FRAME
        self.peer_goaway = False  # the client said GOAWAY(NO_ERROR): its streams finish
        self._now = 0.0
        window = settings.flood_window
        self._resets = Budget("stream resets", settings.max_resets, window)
        self._pings = Budget("PING frames", settings.max_pings, window)
        self._settings_frames = Budget("SETTINGS frames", settings.max_settings, window)
        self._empty = Budget("frames without content", settings.max_empty_frames, window)
        self._initiated = False
        self._settings_seen = False
        self._highest_taken = 0  # highest stream id we processed (GOAWAY's last stream id)
        self._closed = False
        self._error: H2ProtocolError | None = None
        self._goaway_queued = False
        self._shutdown = 0  # 1: first GOAWAY sent, waiting for the PING; 2: final GOAWAY
        self._goaway_last = MAX_STREAM_ID
        self._probe_sent: float | None = None
        self._last_ping_ack: float | None = None
        self._upgrade_body = False

    def _fail(self, exc: H2ProtocolError) -> None:
        """RFC 9113 §5.4.1: a connection error sends GOAWAY, then the connection closes."""
        self._error = exc
        self._closed = True
        for stream in self._streams.values():
            stream.drop_output()
        self._ready.clear()
        if not self._goaway_queued:
            self._goaway_queued = True
            last = min(self._wire.highest, self._goaway_last)
            self._out += frames.goaway_frame(last, exc.error_code)

    # -- the state of a stream a frame names (RFC 9113 §5.1) ---------------------------------

    def _is_idle(self, sid: int) -> bool:
        """§5.1: a stream the client has not opened (we never open any: even ids too)."""
        return sid > self._wire.highest or not sid % 2

    # -- errors and resets -------------------------------------------------------------------

    def _stream_error(self, sid: int, code: int, message: str) -> None:
        """RFC 9113 §5.4.2: RST_STREAM, and the stream is over for the client."""
        if self._is_idle(sid):
            # RST_STREAM must not be sent on an idle stream (§6.4): the connection goes.
            raise H2ProtocolError(f"{message} (idle stream {sid})", code)
        stream = self._streams.get(sid)
        if self._wire.get(sid) is not None or stream is None or stream.reset:
            return  # a closed stream: nothing left to reset
        self._send_reset(sid, code)
        self._resets.spend(self._now)
        self._stream_ended_by_reset(stream, code)

    def _stream_ended_by_reset(self, stream: Stream, code: int) -> None:
        stream.reset = True
        stream.request_open = False
        stream.drop_output()
        # Closed on the wire: no longer one of the active streams RFC 9218 §7.1 counts,
        # though the application may still run it.
        self._scheduler.close(stream.id)
        if stream.app_done:
            self._release(stream)
        else:
            self._ack(None, stream.unacked)
            stream.unacked = 0
            self._events.append(StreamReset(stream.id, int(code)))

    def _send_reset(self, sid: int, code: int) -> None:
        """RST_STREAM from us; later frames on the stream are then ignored (§5.1)."""
        self._out += frames.rst_stream_frame(sid, code)
        self._wire.add(sid, Closed.RESET_BY_US)

    def _ack(self, stream: Stream | None, nbytes: int) -> None:
        """``nbytes`` of received DATA are consumed: reopen the windows (RFC 9113 §6.9)."""
        if nbytes <= 0 or self._closed:
            return
        increment = self._recv_window.give_back(nbytes)
        if increment:
            self._out += frames.window_update_frame(0, increment)
        if stream is not None and stream.request_open and not stream.reset:
            increment = stream.recv_window.give_back(nbytes)
            if increment:
                self._out += frames.window_update_frame(stream.id, increment)

    def _send_headers(self, sid: int, fields: Fields, end_stream: bool) -> None:
        block = self._encoder.encode(fields)
        self._out += frames.headers_frames(sid, block, end_stream, self._peer_max_frame)

    # -- the end of a stream (the sending side, in connection.py, calls these too) ------------

    def _release(self, stream: Stream) -> None:
        """The stream is over for the adapter and for the wire: it stops counting."""
        if self._streams.pop(stream.id, None) is None:
            return
        self._ready.pop(stream.id, None)
        self._scheduler.close(stream.id)
        self._ack(None, stream.unacked)
        stream.unacked = 0
        if stream.reset or self._closed:
            return
        if stream.request_open:
            # RFC 9113 §8.1: the response is complete; ask the client to stop sending.
            self._send_reset(stream.id, ErrorCodes.NO_ERROR)
            stream.reset = True
        else:
            self._wire.add(stream.id, Closed.ENDED)

    def _final_goaway(self) -> None:
        """RFC 9113 §6.8: the GOAWAY naming the last stream we processed."""
        if self._closed or self._shutdown == 2:
            return
        self._shutdown = 2
        self._goaway_last = self._highest_taken
        self._out += frames.goaway_frame(self._highest_taken, ErrorCodes.NO_ERROR)


def list_size(fields: Fields) -> int:
    # RFC 9113 §6.5.2: name + value + 32 octets per field, as SETTINGS_MAX_HEADER_LIST_SIZE.
    return sum(map(len, chain.from_iterable(fields))) + 32 * len(fields)
