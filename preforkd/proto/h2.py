"""The HTTP/2 server-side protocol core: bytes in, events out; responses framed to bytes.

Theory of operation
-------------------
``H2Connection`` wraps h2's ``H2Connection`` (server side) and puts a frame layer in front
of it (``h2_frames``). Received bytes are split into frames here; each frame is checked,
counted against the flood budgets, and then handed to h2 on its own, so every h2 event is
known to come from that frame. h2 keeps what it does well: the stream state machines of
RFC 9113 §5.1, flow-control windows, SETTINGS negotiation, PING and WINDOW_UPDATE
handling, and HPACK encoding of responses. Three things it does not do the way a server
must are done here instead:

* **Field blocks.** HEADERS and CONTINUATION frames are collected here (bounded, against
  the CONTINUATION flood) and decoded by our own HPACK decoder. h2 then receives a single
  stand-in HEADERS frame for the stream whose block is empty (its header checks are
  off), so its decoder never touches a dynamic table. The real
  fields are judged by ``h2_fields``: a malformed request is a *stream* error (RFC 9113
  §8.1.1) instead of h2's connection error, a decoding failure is COMPRESSION_ERROR
  (RFC 9113 §4.3) instead of PROTOCOL_ERROR, and content-length is checked here.
* **Stream admission.** h2's concurrency check would answer an extra stream with a
  connection error; ours answers RST_STREAM(REFUSED_STREAM) (RFC 9113 §5.1.2), counting a
  stream until the application has finished with it, not until the client reset it
  (CVE-2023-44487). h2 is therefore told an unlimited SETTINGS_MAX_CONCURRENT_STREAMS and
  we send our own SETTINGS frame.
* **GOAWAY for a graceful shutdown.** h2 refuses to send anything after its own GOAWAY,
  so the two GOAWAY frames of RFC 9113 §6.8 are written here.

Response bodies wait in per-stream queues (``h2_streams``) and become DATA frames only in
``data_to_send()``, fairly and within the flow-control windows.

Module map: ``h2_config`` (settings, limits, the error), ``h2_frames`` (frame reader and
the frames we write), ``h2_fields`` (request and response field rules), ``h2_streams``
(stream state, DATA scheduler), ``h2_receive`` (state and the receiving side), and this
module (starting, answering, stopping).

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
* A client's GOAWAY(NO_ERROR) is kept from h2 (which would send nothing more): it sets
  ``peer_goaway`` and the streams in flight are still answered (RFC 9113 §6.8); the
  adapter closes once they are done. A GOAWAY with an error code, or EOF, gives
  ``ConnectionClosed``.
* Frames that arrive on a stream after our RST_STREAM are ignored (RFC 9113 §5.1), DATA
  still counted against and given back to the connection window.
* Events depend only on the bytes, never on how they were cut into reads.

Two rules keep this module honest:

1. No IO, no clock, no threads: bytes, values and ``now`` in; events and bytes out.
2. Every rule enforced here cites its RFC section; every rule left to h2 is pinned by a
   test in tests/proto/test_h2_*.py.

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

from h2.settings import SettingCodes

from preforkd.errors import LocalProtocolError, RemoteProtocolError
from preforkd.proto import h2_frames as frames
from preforkd.proto.events import Data, EndOfMessage, Event, Headers, Request
from preforkd.proto.h2_config import ErrorCodes, H2ProtocolError, H2Settings
from preforkd.proto.h2_fields import DROPPED_RESPONSE_FIELDS, response_head
from preforkd.proto.h2_receive import (
    DEFAULT_WINDOW,
    MAX_STREAM_ID,
    PROBE_PING,
    SHUTDOWN_PING,
    Receiver,
)
from preforkd.proto.h2_streams import Stream, frame_data

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
            encoded = frames.parse_http2_settings(http2_settings_header)
        except ValueError as exc:
            raise RemoteProtocolError(f"invalid HTTP2-Settings: {exc}", 400) from exc
        self._h2.initiate_upgrade_connection(encoded)
        self._h2.clear_outbound_data_buffer()  # its SETTINGS carries h2's internal values
        self._out += UPGRADE_RESPONSE
        self._start()
        self._highest = self._highest_taken = 1
        stream = Stream(1, request.method == "HEAD", request.content_length)
        stream.request_open = False  # h2's stream 1 is half-closed (remote) from the start
        self._streams[1] = stream
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
        self._emit(
            frames.settings_frame(
                {
                    SettingCodes.MAX_CONCURRENT_STREAMS: s.max_concurrent_streams,
                    SettingCodes.INITIAL_WINDOW_SIZE: s.initial_window_size,
                    SettingCodes.MAX_FRAME_SIZE: s.max_frame_size,
                    SettingCodes.MAX_HEADER_LIST_SIZE: s.max_header_list_size,
                }
            )
        )
        # RFC 9113 §6.9.2: SETTINGS cannot change the connection window; WINDOW_UPDATE does.
        if s.connection_window_size > DEFAULT_WINDOW:
            self._h2.increment_flow_control_window(s.connection_window_size - DEFAULT_WINDOW)

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
            self._ack(stream_id, nbytes)

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
            self._h2.send_headers(stream_id, head.fields)
            return
        stream.status = head.code
        stream.no_body = head.no_body
        stream.remaining = head.content_length
        if head.no_body or (end_stream and not stream.short):
            # RFC 9110 §6.4.1: HEAD, 204 and 304 end with their head.
            self._h2.send_headers(stream_id, head.fields, end_stream=True)
            stream.ended = True
        else:
            self._h2.send_headers(stream_id, head.fields)
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
            self._reset_stream(stream, ErrorCodes.INTERNAL_ERROR)  # see frame_data
            self._release(stream)
        else:
            stream.end_pending = True
            self._schedule(stream)

    def _schedule(self, stream: Stream) -> None:
        if not stream.scheduled:
            stream.scheduled = True
            self._ready.append(stream)

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

    def _lookup(self, stream_id: int) -> Stream | None:
        stream = self._streams.get(stream_id)
        if stream is None and (not stream_id % 2 or not 0 < stream_id <= self._highest):
            raise LocalProtocolError(f"no request was received on stream {stream_id}", 500)
        return stream

    def data_to_send(self) -> bytes:
        """All bytes to write now: control frames, then response data framed fairly.

        DATA is framed round-robin across the streams with queued data, at most 16 KiB per
        stream per round, within the stream and connection windows and the client's
        SETTINGS_MAX_FRAME_SIZE. Call it after every other call.
        """
        if self._ready and not self._closed:
            frame_data(self._h2, self._ready, self._on_framed_end)
        self._drain_h2()
        data = bytes(self._out)
        self._out.clear()
        return data

    def _on_framed_end(self, stream: Stream) -> None:
        if stream.app_done:
            self._release(stream)

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

        The client keeps its flow-control window closed (or does not read at all). The
        adapter calls this from its periodic timer and resets them (``reset_stream(id,
        ErrorCodes.CANCEL)``); the application's next write then fails.
        """
        stalled = []
        for stream in self._streams.values():
            if not stream.pending or not stream.buffered:
                stream.mark_time = None
            elif stream.mark_time is None or stream.sent != stream.mark_sent:
                stream.mark_sent = stream.sent
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
        self._h2.ping(PROBE_PING)

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
        self._emit(frames.goaway_frame(MAX_STREAM_ID, ErrorCodes.NO_ERROR))
        self._h2.ping(SHUTDOWN_PING)

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
