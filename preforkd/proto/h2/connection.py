"""The HTTP/2 server connection: bytes in, events out; responses framed to bytes.

Theory of operation
-------------------
``H2Connection`` is a sans-IO HTTP/2 server (RFC 9113) of our own; only HPACK (RFC 7541)
is a library's (``hpack``). Received bytes are cut into frames by ``frames.FrameReader``
(each frame checked once, its length before its payload is buffered); each frame is
counted against the flood budgets and applied to the connection's state in
``receive.Receiver``: the stream table and its states (§5.1, ``streams``), the windows we
grant and the ones we respect (§5.2, §6.9, ``flow``), SETTINGS (§6.5), PING, GOAWAY and
RST_STREAM. A header block is collected under a size bound and decoded once; the request
fields are judged by ``fields`` (a malformed request is a *stream* error, §8.1.1).

Sending: response heads are encoded and framed at once (``send_response``); response
bodies wait in per-stream queues and become DATA frames only in ``data_to_send()``, in the
order the DATA scheduler gives (``scheduler``'s interface; ``priority``'s RFC 9218 one by
default), within the stream and connection windows and the client's
SETTINGS_MAX_FRAME_SIZE.

Module map: ``settings`` (settings, limits, error codes, the error), ``frames`` (frame
reader and writers), ``fields`` (HTTP/2's mapping of request and response fields onto
the shared rules of proto/fields.py), ``codec`` (HPACK), ``streams`` (stream state,
closed-stream records), ``flow`` (receive windows), ``scheduler`` and ``priority`` (DATA
order, RFC 9218), ``state`` (what a connection knows, and the actions both sides share),
``receive`` (frames in), and this module (starting, answering, stopping).

Decisions worth knowing (details at the code that implements them):

* A malformed request is answered RST_STREAM(PROTOCOL_ERROR); the application never sees
  it. So is a body whose length differs from its content-length (RFC 9113 §8.1.1).
* A header list over SETTINGS_MAX_HEADER_LIST_SIZE but within twice that is answered 431
  by the server itself; a larger one is not decoded: GOAWAY(ENHANCE_YOUR_CALM).
* CONNECT (RFC 9113 §8.5) is answered 501 by the server itself: WSGI cannot run a tunnel,
  and 405 would need an Allow field naming methods the application may not support.
* Request trailers are checked (no pseudo-headers, END_STREAM set) and dropped, as the
  HTTP/1.1 core drops chunked trailers.
* A stream counts against SETTINGS_MAX_CONCURRENT_STREAMS from its Request until the
  adapter has finished it *and* its response is framed; streams beyond are refused with
  RST_STREAM(REFUSED_STREAM), which a client may retry (RFC 9113 §8.7).
* A response that ends before its Content-Length is reset (INTERNAL_ERROR); bytes beyond
  it are dropped. A response complete before its request is followed by
  RST_STREAM(NO_ERROR) (RFC 9113 §8.1).
* A client's GOAWAY(NO_ERROR) sets ``peer_goaway`` and the streams in flight are still
  answered (RFC 9113 §6.8); the adapter closes once they are done. A GOAWAY with an error
  code, or EOF, gives ``ConnectionClosed``.
* Frames that arrive on a stream after our RST_STREAM are ignored (RFC 9113 §5.1), DATA
  still counted against and given back to the connection window. The last 256 closed
  streams are remembered with how they closed (``streams.CLOSED_STREAM_MEMORY``), so the
  state of one connection is bounded however many requests it serves.
* Events depend only on the bytes, never on how they were cut into reads.

Two rules keep this module honest:

1. No IO, no clock, no threads: bytes, values and ``now`` in; events and bytes out.
2. Every rule enforced here cites its RFC section, and is pinned by a test in
   tests/proto/test_h2_*.py (the differential ones compare it with the h2 library).

Driving it (the adapter)
------------------------
``initiate()`` (or ``initiate_upgrade()``), then for every read ``receive_data(data, now)``
and dispatch the events; after every call of any method write ``data_to_send()``; close
the transport once ``done`` is true, or when ``H2ProtocolError`` was raised (the GOAWAY is
already in ``data_to_send()``). Every ``Request`` event must eventually be answered by a
``send_response``/``send_data`` call with ``end_stream=True`` or by ``reset_stream()``,
even after a ``StreamReset`` for it: until then the stream counts against the limit.
"""

from __future__ import annotations

import preforkd.proto.h2.frames as frames
from preforkd.errors import LocalProtocolError, RemoteProtocolError
from preforkd.proto.events import Data, EndOfMessage, Event, Headers, Request
from preforkd.proto.h2.fields import DROPPED_RESPONSE_FIELDS, response_head
from preforkd.proto.h2.receive import Receiver
from preforkd.proto.h2.settings import (
    DEFAULT_WINDOW,
    ErrorCodes,
    H2ProtocolError,
    H2Settings,
    SettingCodes,
)
from preforkd.proto.h2.state import MAX_STREAM_ID, PROBE_PING, SHUTDOWN_PING
from preforkd.proto.h2.streams import Stream

# The most a stream sends per turn of the DATA scheduler (also the RFC default frame
# size): incremental responses take turns, and a more urgent one overtakes, at this grain.
QUANTUM = 16384

__all__ = [
    "UPGRADE_RESPONSE",
    "ErrorCodes",
    "H2Connection",
    "H2ProtocolError",
    "H2Settings",
]

# RFC 7540 §3.2: the answer to "Upgrade: h2c" (RFC 9113 §3.1 deprecates the mechanism, but
# clients still use it); our SETTINGS frame follows it.
UPGRADE_RESPONSE = (
    b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: h2c\r\n\r\n"
)
# Fields of an h2c upgrade request that only concerned the HTTP/1.1 connection.
_UPGRADE_DROP = DROPPED_RESPONSE_FIELDS | {"http2-settings"}


class H2Connection(Receiver):
    """One HTTP/2 connection, server side: ``H2Connection(settings=None, server=b"preforkd")``.

    ``server`` is the Server field added to responses that have none (b"" for none);
    ``date_header`` (bytes, set by the adapter) is the Date field.
    """

    # -- starting ---------------------------------------------------------------------------

    def initiate(self) -> None:
        """Queue the server connection preface: our SETTINGS (RFC 9113 §3.4)."""
        self._start()

    def initiate_upgrade(self, http2_settings_header: str, request: Request) -> list[Event]:
        """Take over from HTTP/1.1 after "Upgrade: h2c" (RFC 7540 §3.2).

        ``http2_settings_header`` is the request's one HTTP2-Settings value (the adapter
        declines the upgrade if there are none or several, RFC 7540 §3.2.1, and when the
        request expects 100-continue). Raises ``RemoteProtocolError(400)`` without any
        effect when it is invalid: decline then. Queues the 101 response and our SETTINGS,
        and returns the events of stream 1, which carries the upgraded request: its
        ``Request`` and, when it has no body, its ``EndOfMessage``. A body is still read
        over HTTP/1.1: pass each piece to ``receive_upgrade_body``, and only then the bytes
        that follow it to ``receive_data``. Those body bytes are not flow-controlled.
        """
        if self._initiated:
            raise LocalProtocolError("the connection is already initiated", 500)
        try:
            values = frames.parse_http2_settings(http2_settings_header)
        except ValueError as exc:
            raise RemoteProtocolError(f"invalid HTTP2-Settings: {exc}", 400) from exc
        # RFC 7540 §3.2.1: the header stands for the client's first SETTINGS frame (which
        # is not acknowledged: it never was a frame).
        self._apply_settings(values)
        self._out += UPGRADE_RESPONSE
        self._start()
        self._wire.highest = self._highest_taken = 1
        stream = Stream(
            1,
            request.method == "HEAD",
            request.content_length,
            self.settings.initial_window_size,
            self._peer_initial_window,
        )
        stream.request_open = False  # stream 1 is half-closed (remote) from the start
        self._streams[1] = stream
        lines = [value for name, value in request.headers if name == "priority"]
        self._scheduler.open(1, ", ".join(lines).encode("latin-1") if lines else None)
        headers = [
            (n, v)
            for n, v in request.headers
            if n not in _UPGRADE_DROP and (n != "te" or v.lower() == "trailers")
        ]
        events: list[Event] = [
            Request(
                request.method,
                request.target,
                "2",
                headers,
                has_body=request.has_body,
                content_length=request.content_length,
                stream_id=1,
            )
        ]
        self._upgrade_body = request.has_body
        if not request.has_body:
            events.append(EndOfMessage(1))
        return events

    def receive_upgrade_body(self, data: bytes, end: bool = False) -> list[Event]:
        """A piece of the upgraded request's body, read over HTTP/1.1, as stream-1 events."""
        if not self._upgrade_body:
            raise LocalProtocolError("no upgrade body is expected", 500)
        events: list[Event] = [Data(data, 1)] if data else []
        if end:
            self._upgrade_body = False
            events.append(EndOfMessage(1))
        return events

    def _start(self) -> None:
        if self._initiated:
            raise LocalProtocolError("the connection is already initiated", 500)
        self._initiated = True
        s = self.settings
        self._out += frames.settings_frame(
            {
                SettingCodes.MAX_CONCURRENT_STREAMS: s.max_concurrent_streams,
                SettingCodes.INITIAL_WINDOW_SIZE: s.initial_window_size,
                SettingCodes.MAX_FRAME_SIZE: s.max_frame_size,
                SettingCodes.MAX_HEADER_LIST_SIZE: s.max_header_list_size,
                # RFC 9218 §2.1: we ignore RFC 7540 priority signals (RFC 9113 §5.3.2
                # deprecates them); clients may stop sending them, and use RFC 9218's.
                SettingCodes.NO_RFC7540_PRIORITIES: 1,
            }
        )
        # RFC 9113 §6.9.2: SETTINGS cannot change the connection window; WINDOW_UPDATE does.
        if s.connection_window_size > DEFAULT_WINDOW:
            increment = s.connection_window_size - DEFAULT_WINDOW
            self._out += frames.window_update_frame(0, increment)
            self._recv_window.available += increment

    # -- flow control of request bodies ---------------------------------------------------

    def acknowledge_received_data(self, stream_id: int, nbytes: int) -> None:
        """The application consumed ``nbytes`` of the stream's body.

        Only then do the stream and connection windows reopen (WINDOW_UPDATE, sent when
        half a window is consumed): the upload backpressure. Acknowledging more than was
        delivered, or after the stream ended, is harmless.
        """
        stream = self._streams.get(stream_id)
        if stream is None or self._closed:
            return
        nbytes = min(nbytes, stream.unacked)
        if nbytes > 0:
            stream.unacked -= nbytes
            self._ack(stream, nbytes)

    def receivable(self, stream_id: int) -> int:
        """How many more DATA bytes the client may send on the stream before our windows
        (the stream's and the connection's) must reopen: 0 for a stream that is over."""
        stream = self._streams.get(stream_id)
        if stream is None or not stream.request_open or self._closed:
            return 0
        return min(stream.recv_window.available, self._recv_window.available)

    @property
    def connection_receivable(self) -> int:
        """How many more DATA bytes the client may send on the connection, all streams."""
        return self._recv_window.available

    # -- sending ----------------------------------------------------------------------------

    def send_response(
        self, stream_id: int, status: str, headers: Headers, end_stream: bool = False
    ) -> None:
        """Send the response head, e.g. ``send_response(1, "200 OK", [...])``.

        A 1xx status sends an interim response (e.g. 100 Continue); the final one follows.
        Raises ``LocalProtocolError`` (500) for an invalid status or field, with no effect:
        the adapter may then send a 500 instead. No effect on a stream that was reset.
        """
        stream = self._lookup(stream_id)
        if stream is None:
            return
        if stream.status:
            raise LocalProtocolError("the response has already started", 500)
        head = response_head(status, headers, stream.head_request, self.date_header, self._server)
        if stream.reset or self._closed:
            if end_stream:
                self._finish_app(stream)
            return
        if head.code < 200:
            if end_stream:
                raise LocalProtocolError("an interim response cannot end the stream", 500)
            self._send_headers(stream_id, head.fields, False)
            return
        stream.status = head.code
        stream.no_body = head.no_body
        stream.remaining = head.content_length
        if head.no_body or (end_stream and not stream.short):
            # RFC 9110 §6.4.1: HEAD, 204 and 304 end with their head.
            self._send_headers(stream_id, head.fields, True)
            stream.ended = True
        else:
            self._send_headers(stream_id, head.fields, False)
        if end_stream:
            self._end_body(stream)

    def send_data(self, stream_id: int, data: bytes, end_stream: bool = False) -> None:
        """Queue body bytes; ``data_to_send()`` frames them as the windows allow.

        Bytes beyond the response's Content-Length are dropped (RFC 9113 §8.1.1: never more
        than declared); a body that ends short of it is reset instead of ended. Bodies of
        HEAD, 204 and 304 responses are dropped. No effect on a stream that was reset.
        """
        stream = self._lookup(stream_id)
        if stream is None:
            return
        if not stream.status:
            raise LocalProtocolError("send_data() before send_response()", 500)
        if stream.reset or self._closed or stream.app_done:
            if end_stream:
                self._finish_app(stream)
            return
        if data and not stream.no_body:
            remaining = stream.remaining
            if remaining is not None:
                data = data[:remaining]
                stream.remaining = remaining - len(data)
            stream.queue(data)
        if end_stream:
            self._end_body(stream)
        elif stream.buffered:
            self._schedule(stream)

    def _end_body(self, stream: Stream) -> None:
        stream.app_done = True
        if stream.ended:
            self._release(stream)
        elif stream.short and not stream.buffered:
            self._reset_stream(stream, ErrorCodes.INTERNAL_ERROR)  # see _send_some
            self._release(stream)
        else:
            stream.end_pending = True
            self._schedule(stream)

    def _schedule(self, stream: Stream) -> None:
        if not stream.scheduled:
            stream.scheduled = True
            self._ready[stream.id] = stream

    def reset_stream(self, stream_id: int, error_code: int = ErrorCodes.INTERNAL_ERROR) -> None:
        """Abandon the stream: the application failed after its head was sent, or the
        adapter gives up on it (e.g. ``stalled_streams``). Also how the adapter finishes a
        stream it got a ``StreamReset`` for. Idempotent."""
        stream = self._lookup(stream_id)
        if stream is None:
            return
        if not stream.reset and not self._closed:
            self._reset_stream(stream, error_code)
        self._finish_app(stream)

    def _reset_stream(self, stream: Stream, code: int) -> None:
        if not stream.reset and self._wire.get(stream.id) is None:
            self._send_reset(stream.id, code)
        stream.reset = True
        stream.drop_output()
        self._scheduler.close(stream.id)  # closed on the wire (see _stream_ended_by_reset)

    def _finish_app(self, stream: Stream) -> None:
        stream.app_done = True
        if stream.reset or stream.ended or self._closed:
            self._release(stream)

    def _lookup(self, stream_id: int) -> Stream | None:
        stream = self._streams.get(stream_id)
        if stream is None and (not stream_id % 2 or not 0 < stream_id <= self._wire.highest):
            raise LocalProtocolError(f"no request was received on stream {stream_id}", 500)
        return stream

    def data_to_send(self) -> bytes:
        """All bytes to write now: control frames, then response data framed fairly.

        DATA is framed in the order of the RFC 9218 scheduler (``priority``), 16 KiB at
        a time, within the stream and connection windows and the client's
        SETTINGS_MAX_FRAME_SIZE. Call it after every other call.
        """
        if self._ready and not self._closed:
            self._frame_data()
        data = bytes(self._out)
        self._out.clear()
        return data

    def _frame_data(self) -> None:
        """Frame queued response data one quantum at a time, each to the first stream in
        the scheduler's order that its windows let send (RFC 9218 §10: the most urgent
        stream that can send). A stream with data left moves to the back of the ready
        order (that recency is the round-robin of incremental streams), and the order is
        asked again. Streams blocked by flow control stay ready until a window opens."""
        size = min(self._peer_max_frame, QUANTUM)
        ready = self._ready
        scheduler = self._scheduler
        while ready:
            progress = False
            for sid in scheduler.order(list(ready)):
                stream = ready.pop(sid, None)
                if stream is None:
                    continue
                sent = stream.pending and self._send_some(stream, size)
                progress = progress or sent
                if sent and stream.pending and scheduler.keeps_turn(sid):
                    # Still first, and the others' order unchanged: no need to ask again.
                    while stream.pending and self._send_some(stream, size):
                        pass
                    sent = False  # held by a window now, or done: on to the next
                if stream.pending:
                    ready[sid] = stream
                    if sent:
                        break  # the next quantum goes to whoever is first now
                    continue
                stream.scheduled = False
                if stream.ended and stream.app_done:
                    self._release(stream)
            if not progress:
                break

    def _send_some(self, stream: Stream, size: int) -> bool:
        """Frame up to ``size`` bytes of ``stream``; False when flow control allows none."""
        sid = stream.id
        if stream.buffered:
            size = min(size, self._send_window, stream.send_window, stream.buffered)
            if size <= 0:
                return False  # a window can even be negative (RFC 9113 §6.9.2)
            chunk = stream.take(size)
            self._send_window -= size
            self._data_sent += size
            stream.send_window -= size
            # The last chunk carries END_STREAM, unless the body is short of its length.
            end = not stream.buffered and stream.end_pending and not stream.short
            self._out += frames.data_frame(sid, chunk, end)
            if end:
                stream.end_pending = False
                stream.ended = True
            if stream.buffered or not stream.end_pending:
                return True
        # The queue is empty and the application has ended its response.
        if stream.short:
            # Fewer bytes than its Content-Length: the client must not take it as complete.
            self._send_reset(sid, ErrorCodes.INTERNAL_ERROR)
            stream.reset = True
        else:
            self._out += frames.data_frame(sid, b"", True)  # needs no window (§6.9.1)
        stream.end_pending = False
        stream.ended = True
        return True

    # -- backpressure, timeouts -----------------------------------------------------------

    def stream_buffered(self, stream_id: int) -> int:
        """Response bytes of the stream queued but not yet framed (0 once it is over).

        The adapter blocks the application's writes while this is above its high-water
        mark: a client that reads slowly, or keeps its window closed, slows the app down.
        """
        stream = self._streams.get(stream_id)
        return stream.buffered if stream is not None else 0

    def stream_open(self, stream_id: int) -> bool:
        """The stream still takes response data (not reset, not ended)."""
        stream = self._streams.get(stream_id)
        return stream is not None and not (stream.reset or stream.app_done or self._closed)

    def stalled_streams(self, now: float, timeout: float) -> list[int]:
        """Streams whose queued response data has not progressed for ``timeout`` seconds.

        The client keeps its flow-control window closed (or does not read at all). A
        stream whose own window is open while the connection sends other streams' DATA is
        only waiting its turn (RFC 9218 §10), not stalled. The adapter calls this from its
        periodic timer and resets them (``reset_stream(id, ErrorCodes.CANCEL)``); the
        application's next write then fails.
        """
        stalled = []
        data_sent = self._data_sent
        for stream in self._streams.values():
            # Progress is the stream's own, or, while its window is open, the connection's:
            # a stream waiting for more urgent ones (RFC 9218 §10) is not held by its client.
            progress = stream.sent + (data_sent if stream.send_window > 0 else 0)
            if not stream.pending or not stream.buffered:
                stream.mark_time = None
            elif stream.mark_time is None or progress != stream.mark_sent:
                stream.mark_sent = progress
                stream.mark_time = now
            elif now - stream.mark_time >= timeout:
                stalled.append(stream.id)
        return stalled

    # -- PING and shutdown ------------------------------------------------------------------

    def ping(self, now: float) -> None:
        """Send an idle probe, unless one is already outstanding.

        ``ping_outstanding_since`` says since when an answer is awaited; the adapter closes
        the connection when that is too long ago. ``last_ping_ack`` is the ``now`` of the
        ``receive_data`` call that brought the latest answer.
        """
        if self._closed or self._probe_sent is not None:
            return
        self._probe_sent = now
        self._out += frames.ping_frame(PROBE_PING)

    @property
    def ping_outstanding_since(self) -> float | None:
        return self._probe_sent

    @property
    def last_ping_ack(self) -> float | None:
        return self._last_ping_ack

    def start_graceful_shutdown(self) -> None:
        """RFC 9113 §6.8: GOAWAY(2^31-1, NO_ERROR) and a PING.

        The client learns not to open more streams, while those already in flight are
        still accepted. The PING's acknowledgement proves the client has seen the GOAWAY;
        then the final GOAWAY, naming the last stream processed, goes out by itself. The
        adapter calls ``finish_graceful_shutdown()`` if no acknowledgement comes within its
        timeout (a round trip or two; a second is plenty), and closes once ``done``.
        """
        if self._closed or self._shutdown:
            return
        self._shutdown = 1
        self._out += frames.goaway_frame(MAX_STREAM_ID, ErrorCodes.NO_ERROR)
        self._out += frames.ping_frame(SHUTDOWN_PING)

    def finish_graceful_shutdown(self) -> None:
        """Send the final GOAWAY: streams opened after it are refused."""
        self._final_goaway()

    @property
    def shutting_down(self) -> bool:
        return self._shutdown > 0

    @property
    def done(self) -> bool:
        """Nothing more will happen: write ``data_to_send()`` and close the transport.

        After a connection error, after the client's GOAWAY or EOF, or once the final
        GOAWAY is sent and every stream is over.
        """
        return self._closed or (self._shutdown == 2 and not self._streams)

    @property
    def closed(self) -> bool:
        """The connection is dead (error, client GOAWAY or EOF): no more streams will run."""
        return self._closed

    @property
    def open_streams(self) -> int:
        """Streams in progress: from their Request until finished by the adapter and sent."""
        return len(self._streams)

    @property
    def receiving_headers(self) -> bool:
        """A header block has begun and not ended: the adapter times it like an HTTP/1.1
        request head (slowloris over CONTINUATION frames is bounded in size, not time)."""
        return self._block is not None
