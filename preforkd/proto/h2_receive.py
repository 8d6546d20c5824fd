"""The receiving side of the HTTP/2 core: bytes to checked frames, to h2, to events.

``Receiver`` holds the connection's state and everything that happens when bytes arrive
(see the theory of operation in h2.py). ``H2Connection`` adds the methods the adapter
calls to start, answer and stop.
"""

from __future__ import annotations

from collections import deque

import h2.events as h2e
import h2.exceptions as h2x
from h2.config import H2Configuration
from h2.connection import H2Connection as _H2
from h2.settings import SettingCodes, Settings
from hpack import Decoder
from hpack.exceptions import HPACKError, OversizedHeaderListError

from preforkd.proto import h2_frames as frames
from preforkd.proto.events import (
    ConnectionClosed,
    Data,
    EndOfMessage,
    Event,
    Request,
    StreamReset,
)
from preforkd.proto.h2_config import Budget, ErrorCodes, H2ProtocolError, H2Settings
from preforkd.proto.h2_fields import (
    Fields,
    Malformed,
    Unsupported,
    check_trailers,
    parse_request,
    server_response,
)
from preforkd.proto.h2_frames import HeaderBlock, RawFrame
from preforkd.proto.h2_streams import Stream

__all__ = ["DEFAULT_WINDOW", "MAX_STREAM_ID", "PROBE_PING", "SHUTDOWN_PING", "Receiver"]

MAX_STREAM_ID = 2**31 - 1
DEFAULT_WINDOW = 65535
# The header block h2 sees for every HEADERS frame: empty. h2 only opens the stream (or
# takes the trailers) and runs its state machine; the real fields were decoded and judged
# here, and h2's own header validation is off.
_STAND_IN = b""
PROBE_PING = b"preforkd"  # PING payloads are 8 bytes (RFC 9113 §6.7)
SHUTDOWN_PING = b"shutdown"
# Stream ids recently closed by END_STREAM in both directions, remembered so that DATA on
# them is the connection error RFC 9113 §5.1 asks for (h2 answers it with RST_STREAM).
_CLOSED_MEMORY = 1024


class _BoundedH2(_H2):
    """h2's connection, remembering as many closed streams as we do.

    h2 keeps a record of up to 65,536 closed streams per connection (MAX_CLOSED_STREAMS),
    about 150 bytes each: a long-lived connection grew by that much per request up to
    ~11 MiB, and the memory stayed with the worker after the connection closed. The
    records only refine how a late frame on a closed stream is answered (RFC 9113 §5.1);
    a stream older than the last 1,024 is still known to be closed (its id is below the
    highest one opened), so a small bound loses nothing a client can tell."""

    MAX_CLOSED_STREAMS = _CLOSED_MEMORY


class Receiver:
    """Connection state, and the handling of received bytes."""

    def __init__(self, settings: H2Settings | None = None, server: bytes = b"preforkd") -> None:
        self.settings = settings = settings or H2Settings()
        #: The Date field value for responses; the adapter keeps it current (e.g. from the
        #: worker's once-a-second clock) -- the core has no clock.
        self.date_header = b""
        self._server = server
        self._h2 = self._new_h2(settings)
        limit = settings.max_header_list_size
        # Up to twice the advertised header list size is decoded, so that a request that
        # is too large but well-formed gets 431 and the connection lives on; beyond that
        # the block is not decoded and the connection ends (see HeaderBlock).
        self._decoder = Decoder(max_header_list_size=2 * limit)
        self._block_limit = 2 * limit
        self._reader = frames.FrameReader(settings.max_frame_size)
        self._block: HeaderBlock | None = None
        self._streams: dict[int, Stream] = {}
        self._ready: deque[Stream] = deque()
        self._out = bytearray()
        self._events: list[Event] = []
        self._closed_normally: dict[int, None] = {}
        # Streams we reset. RFC 9113 §5.1 ("closed"): frames that arrive on them after our
        # RST_STREAM (the client may have sent them before seeing it) MUST be ignored;
        # h2 would answer each with another RST_STREAM.
        self._reset_by_us: dict[int, None] = {}
        self.peer_goaway = False  # the client said GOAWAY(NO_ERROR): its streams finish
        self._now = 0.0
        window = settings.flood_window
        self._resets = Budget("stream resets", settings.max_resets, window)
        self._pings = Budget("PING frames", settings.max_pings, window)
        self._settings_frames = Budget("SETTINGS frames", settings.max_settings, window)
        self._empty = Budget("frames without content", settings.max_empty_frames, window)
        self._initiated = False
        self._preface_fed = False
        self._settings_seen = False
        self._highest = 0  # highest stream id the client has opened
        self._highest_taken = 0  # highest stream id we processed (GOAWAY's last stream id)
        self._closed = False
        self._error: H2ProtocolError | None = None
        self._goaway_queued = False
        self._shutdown = 0  # 1: first GOAWAY sent, waiting for the PING; 2: final GOAWAY
        self._goaway_last = MAX_STREAM_ID
        self._probe_sent: float | None = None
        self._last_ping_ack: float | None = None
        self._upgrade_body = False

    @staticmethod
    def _new_h2(settings: H2Settings) -> _H2:
        # h2 only ever sees our stand-in header blocks (empty) and
        # response fields that h2_fields.response_head has already checked, lower-cased and
        # stripped: its own header validation and normalisation would do the work twice
        # (a quarter of the HTTP/2 hot path in the bench profile).
        config = H2Configuration(
            client_side=False,
            header_encoding=None,
            validate_inbound_headers=False,
            normalize_inbound_headers=False,
            validate_outbound_headers=False,
            normalize_outbound_headers=False,
            split_outbound_cookies=False,
        )
        conn = _BoundedH2(config=config)
        # What h2 enforces: our frame and header limits, and no concurrency limit (ours is
        # enforced in _on_new_stream). The initial window is left at the RFC default until
        # the client acknowledges our SETTINGS, as RFC 9113 §6.9.2 has it; h2 applies a
        # pending value when that ACK arrives.
        conn.local_settings = Settings(
            client=False,
            initial_values={
                SettingCodes.MAX_CONCURRENT_STREAMS: MAX_STREAM_ID,
                SettingCodes.MAX_FRAME_SIZE: settings.max_frame_size,
                SettingCodes.MAX_HEADER_LIST_SIZE: settings.max_header_list_size,
            },
        )
        if settings.initial_window_size != DEFAULT_WINDOW:
            conn.local_settings.initial_window_size = settings.initial_window_size
        conn.max_inbound_frame_size = settings.max_frame_size
        return conn

    # -- receiving --------------------------------------------------------------------------

    def receive_data(self, data: bytes, now: float) -> list[Event]:
        """Feed received bytes; ``b""`` means the peer closed its side (EOF).

        Returns the events these bytes completed. ``now`` (any monotonic clock, seconds)
        dates the flood budgets and PING acknowledgements. Raises ``H2ProtocolError`` on a
        connection error, after queuing the GOAWAY; every later call raises it again.
        """
        if self._error is not None:
            raise self._error
        if self._closed:
            return []
        if not data:
            self._closed = True
            return [ConnectionClosed()]
        self._now = now
        events: list[Event] = []
        self._events = events
        try:
            self._reader.feed(data)
            if not self._preface_fed and self._reader.preface_received:
                self._preface_fed = True
                self._feed(frames.PREFACE)
            while not self._closed:
                frame = self._reader.next_frame()
                if frame is None:
                    break
                self._on_frame(frame)
        except H2ProtocolError as exc:
            self._fail(exc)
            raise
        return events

    def _fail(self, exc: H2ProtocolError) -> None:
        self._error = exc
        self._closed = True
        for stream in self._streams.values():
            stream.drop_output()
        if not self._goaway_queued:
            self._goaway_queued = True
            last = min(self._h2.highest_inbound_stream_id, self._goaway_last)
            self._h2.close_connection(exc.error_code, last_stream_id=last)

    def _feed(self, raw: bytes) -> list[h2e.Event]:
        """Hand one frame to h2; its connection errors become ``H2ProtocolError``."""
        try:
            return self._h2.receive_data(raw)
        except h2x.ProtocolError as exc:
            self._goaway_queued = True  # h2 has queued GOAWAY(exc.error_code)
            raise H2ProtocolError(str(exc) or type(exc).__name__, int(exc.error_code)) from exc

    def _on_frame(self, frame: RawFrame) -> None:
        kind = frame.type
        block = self._block
        if block is not None:
            # RFC 9113 §6.10: only CONTINUATION frames of the same stream until END_HEADERS.
            if kind != frames.CONTINUATION or frame.stream_id != block.stream_id:
                raise H2ProtocolError("frame interleaved with a header block")
            block.add(frame.payload)
            if frame.flags & frames.END_HEADERS:
                self._block = None
                self._on_header_block(block)
            elif not frame.length:
                self._empty.spend(self._now)
            return
        if not self._settings_seen:
            # RFC 9113 §3.4: the client preface ends with a SETTINGS frame.
            if kind != frames.SETTINGS or frame.flags & frames.ACK:
                raise H2ProtocolError("the connection preface must end with SETTINGS")
            self._settings_seen = True
        if kind == frames.DATA:
            self._on_data(frame)
        elif kind == frames.HEADERS:
            block = HeaderBlock.start(frame, self._block_limit)
            if frame.flags & frames.END_HEADERS:
                self._on_header_block(block)
            else:
                self._block = block
        elif kind == frames.PRIORITY:
            self._on_priority(frame)
        elif kind == frames.RST_STREAM:
            self._on_rst_stream(frame)
        elif kind == frames.SETTINGS:
            self._on_settings(frame)
        elif kind == frames.PING:
            if not frame.flags & frames.ACK:
                self._pings.spend(self._now)
            self._translate(self._feed(frame.raw))
        elif kind == frames.GOAWAY:
            self._on_goaway(frame)
        elif kind == frames.WINDOW_UPDATE:
            self._on_window_update(frame)
        elif kind == frames.CONTINUATION:
            raise H2ProtocolError("CONTINUATION without a header block")  # §6.10
        elif kind == frames.PUSH_PROMISE:
            raise H2ProtocolError("PUSH_PROMISE from a client")  # §8.4
        else:
            self._empty.spend(self._now)  # §5.5: unknown frame types are ignored

    def _on_data(self, frame: RawFrame) -> None:
        sid = frame.stream_id
        if sid in self._reset_by_us:
            self._ignore_data(frame)
            return
        if sid in self._closed_normally:
            # RFC 9113 §5.1: frames after END_STREAM in both directions are a connection
            # error of type STREAM_CLOSED.
            raise H2ProtocolError(f"DATA on closed stream {sid}", ErrorCodes.STREAM_CLOSED)
        if not frame.length and not frame.flags & frames.END_STREAM:
            self._empty.spend(self._now)  # CVE-2019-9518
        self._translate(self._feed(frame.raw))

    def _ignore_data(self, frame: RawFrame) -> None:
        """DATA on a stream we reset: dropped, but it still counted against the
        connection window (RFC 9113 §6.9), which is given back at once."""
        manager = self._h2._inbound_flow_control_window_manager
        try:
            manager.window_consumed(frame.length)
        except h2x.FlowControlError as exc:
            raise H2ProtocolError(
                "DATA beyond the connection window", ErrorCodes.FLOW_CONTROL_ERROR
            ) from exc
        self._h2.acknowledge_received_data(frame.length, frame.stream_id)

    def _on_goaway(self, frame: RawFrame) -> None:
        """RFC 9113 §6.8: a client's GOAWAY(NO_ERROR) stops new streams, not the ones in
        flight: they are answered, then the adapter closes. h2 would refuse to send
        anything more, so it does not see that frame; an error code ends the connection."""
        if frame.stream_id:
            raise H2ProtocolError("GOAWAY on a stream")
        if frame.length < 8:
            raise H2ProtocolError("GOAWAY length", ErrorCodes.FRAME_SIZE_ERROR)
        if int.from_bytes(frame.payload[4:8]) == ErrorCodes.NO_ERROR:
            self.peer_goaway = True
            return
        self._translate(self._feed(frame.raw))

    def _on_priority(self, frame: RawFrame) -> None:
        # RFC 9113 §5.3.2: priority signals are ignored, but the frame is still checked.
        self._empty.spend(self._now)
        sid = frame.stream_id
        if frame.length != 5:
            self._stream_error(sid, ErrorCodes.FRAME_SIZE_ERROR, "PRIORITY length")  # §6.3
        elif int.from_bytes(frame.payload[:4]) & 0x7FFFFFFF == sid:
            self._stream_error(sid, ErrorCodes.PROTOCOL_ERROR, "stream depends on itself")

    def _on_rst_stream(self, frame: RawFrame) -> None:
        if frame.length != 4:
            raise H2ProtocolError("RST_STREAM length", ErrorCodes.FRAME_SIZE_ERROR)  # §6.4
        if self._is_idle(frame.stream_id):
            raise H2ProtocolError("RST_STREAM on an idle stream")  # §6.4 (h2 ignores it)
        self._translate(self._feed(frame.raw))

    def _on_settings(self, frame: RawFrame) -> None:
        if frame.flags & frames.ACK:
            if frame.length:
                raise H2ProtocolError("SETTINGS ACK with a payload", ErrorCodes.FRAME_SIZE_ERROR)
        else:
            self._settings_frames.spend(self._now)
        self._translate(self._feed(frame.raw))

    def _on_window_update(self, frame: RawFrame) -> None:
        if frame.length != 4:
            raise H2ProtocolError("WINDOW_UPDATE length", ErrorCodes.FRAME_SIZE_ERROR)  # §6.9
        value = int.from_bytes(frame.payload)
        increment = value & 0x7FFFFFFF  # the reserved bit MUST be ignored
        sid = frame.stream_id
        if not increment:
            # §6.9: an increment of 0 is a stream error, or a connection error on stream 0.
            if sid:
                self._stream_error(sid, ErrorCodes.PROTOCOL_ERROR, "WINDOW_UPDATE of 0")
                return
            raise H2ProtocolError("WINDOW_UPDATE of 0 on the connection")
        raw = frame.raw if value == increment else frames.window_update_frame(sid, increment)
        self._translate(self._feed(raw))

    def _is_idle(self, sid: int) -> bool:
        """RFC 9113 §5.1: a stream the client has not opened (we never open any)."""
        return sid > self._highest or not sid % 2

    def _stream_error(self, sid: int, code: int, message: str) -> None:
        """A stream error about a stream's frame that h2 does not see (RFC 9113 §5.4.2)."""
        if self._is_idle(sid):
            # RST_STREAM must not be sent on an idle stream (§6.4): the connection goes.
            raise H2ProtocolError(f"{message} (idle stream {sid})", code)
        h2_stream = self._h2.streams.get(sid)
        if h2_stream is None or h2_stream.closed:
            return  # a closed stream: nothing left to reset
        self._send_reset(sid, code)
        self._resets.spend(self._now)
        stream = self._streams.get(sid)
        if stream is not None:
            self._stream_ended_by_reset(stream, code)

    # -- field blocks ---------------------------------------------------------------------

    def _on_header_block(self, block: HeaderBlock) -> None:
        sid = block.stream_id
        try:
            fields: Fields = list(self._decoder.decode(block.data(), raw=True))
        except OversizedHeaderListError as exc:
            raise H2ProtocolError("header list too large", ErrorCodes.ENHANCE_YOUR_CALM) from exc
        except (HPACKError, IndexError, TypeError, ValueError) as exc:
            # RFC 9113 §4.3: a decoding error is a connection error of type COMPRESSION_ERROR.
            raise H2ProtocolError(f"HPACK: {exc}", ErrorCodes.COMPRESSION_ERROR) from exc
        if not sid % 2:
            raise H2ProtocolError(f"even stream id {sid} from a client")  # §5.1.1
        if sid > self._highest:
            self._on_new_stream(block, fields)
        else:
            self._on_later_block(block, fields)

    def _on_new_stream(self, block: HeaderBlock, fields: Fields) -> None:
        sid, end = block.stream_id, block.end_stream
        self._highest = sid
        request: Request | None = None
        refusal = 0  # the RST_STREAM code when the stream is refused or malformed
        status = 0  # the status the server answers itself with
        if sid > self._goaway_last:
            refusal = ErrorCodes.REFUSED_STREAM  # §6.8: opened after our final GOAWAY
        elif _list_size(fields) > self.settings.max_header_list_size:
            status = 431  # RFC 9113 §10.5.1, RFC 6585 §5
        elif block.depends_on_itself:
            refusal = ErrorCodes.PROTOCOL_ERROR  # §5.3.1
        else:
            try:
                settings = self.settings
                request = parse_request(
                    fields, sid, end, settings.max_request_line, settings.max_field_size
                )
            except Malformed:
                refusal = ErrorCodes.PROTOCOL_ERROR  # §8.1.1
            except Unsupported as exc:
                status = exc.status
        if request is not None and len(self._streams) >= self.settings.max_concurrent_streams:
            request, refusal = None, ErrorCodes.REFUSED_STREAM  # §5.1.2
        # h2 opens the stream (and applies the stream-id rules of §5.1.1) from a stand-in.
        self._feed(frames.headers_frame(sid, _STAND_IN, end))
        if request is not None:
            self._accept(request, end)
        elif status:
            self._answer(sid, status, end)
        else:
            self._send_reset(sid, refusal)
            if sid <= self._goaway_last:
                self._resets.spend(self._now)

    def _accept(self, request: Request, end: bool) -> None:
        sid = request.stream_id
        stream = Stream(sid, request.method == "HEAD", request.content_length)
        stream.request_open = not end
        self._streams[sid] = stream
        self._highest_taken = sid
        self._events.append(request)
        if end:
            self._events.append(EndOfMessage(sid))

    def _answer(self, sid: int, status: int, end: bool) -> None:
        """A response the server gives itself (431, 501), without the application."""
        self._highest_taken = sid
        fields = server_response(status, self.date_header, self._server)
        self._h2.send_headers(sid, fields, end_stream=True)
        if end:
            self._remember_closed(sid)
        else:
            # RFC 9113 §8.1: after a complete response, RST_STREAM(NO_ERROR) asks the
            # client to stop sending the request body.
            self._send_reset(sid, ErrorCodes.NO_ERROR)
        if status == 431:
            self._resets.spend(self._now)

    def _on_later_block(self, block: HeaderBlock, fields: Fields) -> None:
        sid = block.stream_id
        if sid in self._reset_by_us:
            return  # §5.1: ignored after our RST_STREAM (the block was decoded: HPACK state)
        stream = self._streams.get(sid)
        if stream is None or not stream.request_open or stream.reset:
            # Not a stream that can take trailers: h2 answers from the stream's state
            # (RFC 9113 §5.1: STREAM_CLOSED, as a stream or a connection error).
            self._translate(self._feed(frames.headers_frame(sid, _STAND_IN, block.end_stream)))
            return
        # RFC 9113 §8.1: trailers. They are checked, then dropped (as over HTTP/1.1).
        try:
            if not block.end_stream:
                raise Malformed("a second HEADERS frame without END_STREAM")
            if block.depends_on_itself or _list_size(fields) > self.settings.max_header_list_size:
                raise Malformed("trailers too large, or depending on their own stream")
            check_trailers(fields)
        except Malformed:
            self._stream_error(sid, ErrorCodes.PROTOCOL_ERROR, "malformed trailers")
            return
        self._translate(self._feed(frames.headers_frame(sid, _STAND_IN, True)))

    # -- h2 events --------------------------------------------------------------------------

    def _translate(self, events: list[h2e.Event]) -> None:
        for event in events:
            if isinstance(event, h2e.DataReceived):
                self._on_data_received(event)
            elif isinstance(event, h2e.StreamEnded):
                self._on_stream_ended(event.stream_id)
            elif isinstance(event, h2e.StreamReset):
                self._on_stream_reset(event)
            elif isinstance(event, h2e.PingAckReceived):
                self._on_ping_ack(event.ping_data)
            elif isinstance(event, h2e.ConnectionTerminated):
                self._closed = True
                self._events.append(ConnectionClosed())
            # Settings, window updates and priorities need nothing here: h2 has applied
            # them, and data_to_send() reads the windows afresh.

    def _on_data_received(self, event: h2e.DataReceived) -> None:
        sid = event.stream_id
        data = event.data or b""
        flow = event.flow_controlled_length or 0
        stream = self._streams.get(sid)
        if stream is None or stream.reset or stream.app_done:
            self._ack(sid, flow)  # nobody will read it: the window goes back at once
            return
        if flow > len(data):
            self._ack(sid, flow - len(data))  # padding counts against the windows (§6.1)
        stream.received += len(data)
        if stream.expected is not None and stream.received > stream.expected:
            self._ack(sid, len(data))
            self._stream_error(sid, ErrorCodes.PROTOCOL_ERROR, "body longer than content-length")
            return
        if data:
            stream.unacked += len(data)
            self._events.append(Data(data, sid))

    def _on_stream_ended(self, sid: int) -> None:
        stream = self._streams.get(sid)
        if stream is None or stream.reset:
            return
        stream.request_open = False
        if stream.expected is not None and stream.received != stream.expected:
            # RFC 9113 §8.1.1: content-length must equal the sum of the DATA payloads.
            self._stream_error(sid, ErrorCodes.PROTOCOL_ERROR, "body shorter than content-length")
        elif not stream.app_done:
            self._events.append(EndOfMessage(sid))

    def _on_stream_reset(self, event: h2e.StreamReset) -> None:
        # A RST_STREAM from the client, or one h2 sent for the client's error on a stream.
        self._resets.spend(self._now)
        if not event.remote_reset:
            self._remember(self._reset_by_us, event.stream_id)
        stream = self._streams.get(event.stream_id)
        if stream is None or stream.reset:
            return
        self._stream_ended_by_reset(stream, int(event.error_code or 0))

    def _stream_ended_by_reset(self, stream: Stream, code: int) -> None:
        stream.reset = True
        stream.request_open = False
        stream.drop_output()
        if stream.app_done:
            self._release(stream)
        else:
            self._ack(stream.id, stream.unacked)
            stream.unacked = 0
            self._events.append(StreamReset(stream.id, int(code)))

    def _on_ping_ack(self, payload: bytes | None) -> None:
        if payload == PROBE_PING and self._probe_sent is not None:
            self._probe_sent = None
            self._last_ping_ack = self._now
        elif payload == SHUTDOWN_PING and self._shutdown == 1:
            self._final_goaway()
        else:
            self._empty.spend(self._now)  # an acknowledgement of nothing we sent

    def _ack(self, sid: int, nbytes: int) -> None:
        if nbytes > 0 and not self._closed:
            self._h2.acknowledge_received_data(nbytes, sid)

    # -- the end of a stream -----------------------------------------------------------------

    def _reset_stream(self, stream: Stream, code: int) -> None:
        h2_stream = self._h2.streams.get(stream.id)
        if h2_stream is not None and not h2_stream.closed:
            self._send_reset(stream.id, code)
        stream.reset = True
        stream.drop_output()

    def _finish_app(self, stream: Stream) -> None:
        stream.app_done = True
        if stream.reset or stream.ended or self._closed:
            self._release(stream)

    def _release(self, stream: Stream) -> None:
        """The stream is over for the adapter and for the wire: it stops counting."""
        if self._streams.pop(stream.id, None) is None:
            return
        self._ack(stream.id, stream.unacked)
        stream.unacked = 0
        if stream.reset or self._closed:
            return
        if stream.request_open:
            # RFC 9113 §8.1: the response is complete; ask the client to stop sending.
            self._reset_stream(stream, ErrorCodes.NO_ERROR)
        else:
            self._remember_closed(stream.id)

    def _send_reset(self, sid: int, code: int) -> None:
        """RST_STREAM from us; later frames on the stream are then ignored (§5.1)."""
        self._h2.reset_stream(sid, code)
        self._remember(self._reset_by_us, sid)

    def _remember_closed(self, sid: int) -> None:
        self._remember(self._closed_normally, sid)

    @staticmethod
    def _remember(memory: dict[int, None], sid: int) -> None:
        memory[sid] = None
        if len(memory) > _CLOSED_MEMORY:
            del memory[next(iter(memory))]

    def _drain_h2(self) -> None:
        self._out += self._h2.data_to_send()

    def _emit(self, frame: bytes) -> None:
        """Queue a frame we build ourselves, after everything h2 has queued so far."""
        self._drain_h2()
        self._out += frame

    def _final_goaway(self) -> None:
        """RFC 9113 §6.8: the GOAWAY naming the last stream we processed."""
        if self._closed or self._shutdown == 2:
            return
        self._shutdown = 2
        self._goaway_last = self._highest_taken
        self._emit(frames.goaway_frame(self._highest_taken, ErrorCodes.NO_ERROR))


def _list_size(fields: Fields) -> int:
    # RFC 9113 §6.5.2: name + value + 32 octets per field, as SETTINGS_MAX_HEADER_LIST_SIZE.
    return sum(len(name) + len(value) + 32 for name, value in fields)
