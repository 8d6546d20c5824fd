"""The receiving side of the HTTP/2 core: bytes to frames, frames to state and events.

``Receiver`` adds to the connection's state (state.py) everything that happens when bytes
arrive; ``H2Connection`` (connection.py) adds the methods the adapter calls to start,
answer and stop. Every frame is parsed once, here, and every header block decoded once.

Two rules keep this module honest:

1. No IO, no clock, no threads: bytes, values and ``now`` in; events and bytes out.
2. Every rule enforced here cites its RFC section.
"""

from __future__ import annotations

from hpack.exceptions import HPACKError, OversizedHeaderListError

import preforkd.proto.h2.frames as frames
from preforkd.proto.events import ConnectionClosed, Data, EndOfMessage, Event, Request
from preforkd.proto.h2.fields import (
    Fields,
    Malformed,
    Unsupported,
    check_trailers,
    parse_request,
    server_response,
)
from preforkd.proto.h2.frames import HeaderBlock, RawFrame
from preforkd.proto.h2.priority import parse_priority_update
from preforkd.proto.h2.settings import (
    MAX_WINDOW,
    ErrorCodes,
    H2ProtocolError,
    SettingCodes,
)
from preforkd.proto.h2.state import PROBE_PING, SHUTDOWN_PING, ConnectionState, list_size
from preforkd.proto.h2.streams import Closed, Stream

__all__ = ["Receiver"]


class Receiver(ConnectionState):
    """The connection's state, and the handling of received bytes."""

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
        try:
            self._reader.feed(data)
        except H2ProtocolError as exc:  # not the connection preface
            self._fail(exc)
            raise
        return self._receive(now)

    def get_buffer(self, scratch: bytearray) -> memoryview:
        """Where the transport should read to (asyncio.BufferedProtocol.get_buffer).

        ``scratch`` is lent for this one read, until ``buffer_updated`` returns; a worker
        may lend the same buffer to all its connections. Reading into it instead of
        passing bytes to ``receive_data`` spares a copy of every received byte.
        """
        return self._reader.get_buffer(scratch)

    def buffer_updated(self, nbytes: int, now: float) -> list[Event]:
        """``nbytes`` were read into the buffer ``get_buffer`` returned: as
        ``receive_data`` with those bytes (EOF still comes as ``receive_data(b"")``)."""
        reader = self._reader
        if self._error is not None or self._closed:
            reader.settle()  # nothing more is parsed: the lent buffer is not kept
            if self._error is not None:
                raise self._error
            return []
        try:
            reader.buffer_updated(nbytes)
        except H2ProtocolError as exc:  # not the connection preface
            reader.settle()
            self._fail(exc)
            raise
        return self._receive(now)

    def _receive(self, now: float) -> list[Event]:
        self._now = now
        events: list[Event] = []
        self._events = events
        reader = self._reader
        try:
            next_frame = reader.next_frame
            while not self._closed:
                frame = next_frame()
                if frame is None:
                    break
                kind, flags, sid, payload = frame
                if kind == frames.DATA and self._block is None:
                    self._on_data(flags, sid, payload)  # the bulk of an upload: no RawFrame
                else:
                    self._on_frame(RawFrame(kind, flags, sid, payload))
        except H2ProtocolError as exc:
            self._fail(exc)
            raise
        finally:
            reader.settle()  # the rest waits in the reader: a lent buffer is reused
            self._events = []  # the caller owns the events now: keep nothing alive
        return events

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
        if kind == frames.HEADERS:
            block = HeaderBlock.start(frame, self._block_limit)
            if frame.flags & frames.END_HEADERS:
                self._on_header_block(block)
            else:
                self._block = block
        elif not self._settings_seen:
            # RFC 9113 §3.4: the client preface ends with a SETTINGS frame.
            if kind != frames.SETTINGS or frame.flags & frames.ACK:
                raise H2ProtocolError("the connection preface must end with SETTINGS")
            self._settings_seen = True
            self._on_settings(frame)
        else:
            self._on_control(frame)

    def _on_control(self, frame: RawFrame) -> None:
        kind = frame.type
        if kind == frames.WINDOW_UPDATE:
            self._on_window_update(frame)
        elif kind == frames.SETTINGS:
            self._on_settings(frame)
        elif kind == frames.PING:
            self._on_ping(frame)
        elif kind == frames.RST_STREAM:
            self._on_rst_stream(frame)
        elif kind == frames.PRIORITY:
            self._on_priority(frame)
        elif kind == frames.GOAWAY:
            self._on_goaway(frame)
        elif kind == frames.CONTINUATION:
            raise H2ProtocolError("CONTINUATION without a header block")  # §6.10
        elif kind == frames.PUSH_PROMISE:
            raise H2ProtocolError("PUSH_PROMISE from a client")  # §8.4
        elif kind == frames.PRIORITY_UPDATE:
            self._on_priority_update(frame)
        else:
            self._empty.spend(self._now)  # §5.5: unknown frame types are ignored

    # -- the state of a stream a frame names (RFC 9113 §5.1) ---------------------------------

    def _open_stream(self, sid: int, kind: str) -> Stream | None:
        """The stream a DATA or HEADERS frame continues, or None when the frame must be
        dropped. Raises the connection errors of §5.1; answers its stream errors."""
        how = self._wire.get(sid)
        stream = self._streams.get(sid)
        if how is None and stream is not None and not stream.reset:
            if stream.request_open:
                return stream
            # §5.1 half-closed (remote): a stream error of type STREAM_CLOSED.
            self._stream_error(sid, ErrorCodes.STREAM_CLOSED, f"{kind} after END_STREAM")
            return None
        if self._is_idle(sid):
            raise H2ProtocolError(f"{kind} on idle stream {sid}")  # §5.1 idle
        if how is Closed.ENDED:
            # §5.1 closed: frames after END_STREAM both ways are a connection error.
            raise H2ProtocolError(f"{kind} on closed stream {sid}", ErrorCodes.STREAM_CLOSED)
        if how is Closed.RESET_BY_PEER or (how is None and stream is None):
            # §5.1 closed: frames after the peer's RST_STREAM are a stream error
            # STREAM_CLOSED; so are frames on a stream closed implicitly (§5.1.1) or too
            # long ago to remember (as h2 answers them).
            self._send_reset(sid, ErrorCodes.STREAM_CLOSED)
            self._resets.spend(self._now)
        # After our RST_STREAM: ignored (§5.1), the client may have sent it before ours.
        return None

    # -- DATA (RFC 9113 §6.1) ------------------------------------------------------------------

    def _on_data(self, flags: int, sid: int, payload: bytes) -> None:
        """A DATA frame: an upload brings 64 per MiB, so the usual case (an open stream
        whose body the application reads, no padding) is handled first, inline."""
        length = len(payload)
        window = self._recv_window
        # §6.9: DATA counts against the connection window whatever the stream's state.
        if length > window.available:
            raise H2ProtocolError(
                "DATA beyond the connection window", ErrorCodes.FLOW_CONTROL_ERROR
            )
        window.available -= length
        stream = self._streams.get(sid)
        if (
            stream is None
            or flags & frames.PADDED
            or not stream.request_open
            or stream.reset
            or stream.app_done
            or not length
        ):
            self._on_other_data(flags, sid, payload, stream)
            return
        window = stream.recv_window
        if length > window.available:
            # §6.9.1: a peer that overruns the window we granted has lost track of flow
            # control; a connection error, as h2 answers it too.
            raise H2ProtocolError(
                f"DATA beyond the window of stream {sid}", ErrorCodes.FLOW_CONTROL_ERROR
            )
        window.available -= length
        stream.received += length
        if stream.expected is not None and stream.received > stream.expected:
            self._ack(stream, length)
            self._stream_error(sid, ErrorCodes.PROTOCOL_ERROR, "body over content-length")
            return
        stream.unacked += length
        self._events.append(Data(payload, sid))
        if flags & frames.END_STREAM:
            self._on_request_end(stream)

    def _on_other_data(self, flags: int, sid: int, payload: bytes, stream: Stream | None) -> None:
        """DATA with padding, empty, or on a stream that is not open or not read (its
        length is already counted against the connection window)."""
        length = len(payload)
        start, end = 0, length
        if flags & frames.PADDED:
            if not length:
                raise H2ProtocolError("DATA too short for its padding", ErrorCodes.FRAME_SIZE_ERROR)
            start, end = 1, length - payload[0]
            if end < start:
                raise H2ProtocolError("DATA padding exceeds the frame")  # §6.1
        stream = self._open_stream(sid, "DATA")
        if stream is None or stream.app_done:
            self._ack(None, length)  # nobody will read it: the window goes back at once
            return
        if not stream.recv_window.receive(length):
            # §6.9.1, as in _on_data.
            raise H2ProtocolError(
                f"DATA beyond the window of stream {sid}", ErrorCodes.FLOW_CONTROL_ERROR
            )
        size = end - start
        if length > size:
            self._ack(stream, length - size)  # padding counts against the windows (§6.1)
        if size:
            stream.received += size
            if stream.expected is not None and stream.received > stream.expected:
                self._ack(stream, size)
                self._stream_error(sid, ErrorCodes.PROTOCOL_ERROR, "body over content-length")
                return
            stream.unacked += size
            body = payload if size == length else payload[start:end]
            self._events.append(Data(body, sid))
        elif not flags & frames.END_STREAM:
            self._empty.spend(self._now)  # CVE-2019-9518
        if flags & frames.END_STREAM:
            self._on_request_end(stream)

    def _on_request_end(self, stream: Stream) -> None:
        stream.request_open = False
        if stream.expected is not None and stream.received != stream.expected:
            # RFC 9113 §8.1.1: content-length must equal the sum of the DATA payloads.
            self._stream_error(stream.id, ErrorCodes.PROTOCOL_ERROR, "body under content-length")
        elif not stream.app_done:
            self._events.append(EndOfMessage(stream.id))

    # -- field blocks (RFC 9113 §6.2, §6.10, §8) -----------------------------------------------

    def _on_header_block(self, block: HeaderBlock) -> None:
        sid = block.stream_id
        try:
            # Decoded whatever the stream's state: the HPACK table must stay in step (§4.3).
            fields = self._decoder.decode(block.data())
        except OversizedHeaderListError as exc:
            raise H2ProtocolError("header list too large", ErrorCodes.ENHANCE_YOUR_CALM) from exc
        except (HPACKError, IndexError, TypeError, ValueError) as exc:
            # RFC 9113 §4.3: a decoding error is a connection error of type COMPRESSION_ERROR.
            raise H2ProtocolError(f"HPACK: {exc}", ErrorCodes.COMPRESSION_ERROR) from exc
        if not sid % 2:
            raise H2ProtocolError(f"even stream id {sid} from a client")  # §5.1.1
        if sid > self._wire.highest:
            self._on_new_stream(block, fields)
        elif self._wire.get(sid) is None and sid not in self._streams:
            # §5.1.1: a new stream id must exceed every one opened before; a lower one
            # names a stream that was closed implicitly (or too long ago to remember).
            raise H2ProtocolError(f"stream id {sid} is not above {self._wire.highest}")
        else:
            self._on_trailers(block, fields)

    def _on_new_stream(self, block: HeaderBlock, fields: Fields) -> None:
        sid, end = block.stream_id, block.end_stream
        self._wire.highest = sid
        request: Request | None = None
        refusal = 0  # the RST_STREAM code when the stream is refused or malformed
        status = 0  # the status the server answers itself with
        if sid > self._goaway_last:
            refusal = ErrorCodes.REFUSED_STREAM  # §6.8: opened after our final GOAWAY
        elif list_size(fields) > self.settings.max_header_list_size:
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
        if request is not None:
            self._accept(request, end, fields)
        elif status:
            self._answer(sid, status, end)
        else:
            self._scheduler.close(sid)  # refused: forget a PRIORITY_UPDATE kept for it
            self._send_reset(sid, refusal)
            if sid <= self._goaway_last:
                self._resets.spend(self._now)

    def _accept(self, request: Request, end: bool, fields: Fields) -> None:
        sid = request.stream_id
        stream = Stream(
            sid,
            request.method == "HEAD",
            request.content_length,
            self.settings.initial_window_size,
            self._peer_initial_window,
        )
        stream.request_open = not end
        self._streams[sid] = stream
        self._highest_taken = sid
        # RFC 9218 §5: the Priority field, for the DATA scheduler; several field lines
        # are one list (RFC 9110 §5.3).
        priority = None
        for name, value in fields:
            if name == b"priority":
                priority = value if priority is None else priority + b", " + value
        self._scheduler.open(sid, priority)
        self._events.append(request)
        if end:
            self._events.append(EndOfMessage(sid))

    def _answer(self, sid: int, status: int, end: bool) -> None:
        """A response the server gives itself (431, 501), without the application."""
        self._scheduler.close(sid)  # forget a PRIORITY_UPDATE kept for it
        self._highest_taken = sid
        fields = server_response(status, self.date_header, self._server)
        self._send_headers(sid, fields, True)
        if end:
            self._wire.add(sid, Closed.ENDED)
        else:
            # RFC 9113 §8.1: after a complete response, RST_STREAM(NO_ERROR) asks the
            # client to stop sending the request body.
            self._send_reset(sid, ErrorCodes.NO_ERROR)
        if status == 431:
            self._resets.spend(self._now)

    def _on_trailers(self, block: HeaderBlock, fields: Fields) -> None:
        sid = block.stream_id
        stream = self._open_stream(sid, "HEADERS")
        if stream is None:
            return
        # RFC 9113 §8.1: trailers. They are checked, then dropped (as over HTTP/1.1).
        try:
            if not block.end_stream:
                raise Malformed("a second HEADERS frame without END_STREAM")
            if block.depends_on_itself or list_size(fields) > self.settings.max_header_list_size:
                raise Malformed("trailers too large, or depending on their own stream")
            check_trailers(fields)
        except Malformed:
            self._stream_error(sid, ErrorCodes.PROTOCOL_ERROR, "malformed trailers")
            return
        self._on_request_end(stream)

    # -- control frames ----------------------------------------------------------------------

    def _on_settings(self, frame: RawFrame) -> None:
        """RFC 9113 §6.5: apply the client's settings in order, then acknowledge them."""
        if frame.flags & frames.ACK:
            if frame.length:
                raise H2ProtocolError("SETTINGS ACK with a payload", ErrorCodes.FRAME_SIZE_ERROR)
            return
        self._settings_frames.spend(self._now)
        self._apply_settings(frames.parse_settings(frame.payload))
        self._out += frames.SETTINGS_ACK

    def _apply_settings(self, values: dict[int, int]) -> None:
        for code, value in values.items():
            if code == SettingCodes.HEADER_TABLE_SIZE:
                # RFC 7541 §4.2: the encoder announces the new size in its next block.
                self._encoder.set_table_size(value)
            elif code == SettingCodes.MAX_FRAME_SIZE:
                self._peer_max_frame = value
            elif code == SettingCodes.INITIAL_WINDOW_SIZE:
                # §6.9.2: every stream's send window moves by the difference.
                delta = value - self._peer_initial_window
                self._peer_initial_window = value
                for stream in self._streams.values():
                    stream.send_window += delta
                    if stream.send_window > MAX_WINDOW:
                        raise H2ProtocolError(
                            "a stream window over 2^31-1", ErrorCodes.FLOW_CONTROL_ERROR
                        )

    def _on_window_update(self, frame: RawFrame) -> None:
        if frame.length != 4:
            raise H2ProtocolError("WINDOW_UPDATE length", ErrorCodes.FRAME_SIZE_ERROR)  # §6.9
        increment = int.from_bytes(frame.payload) & 0x7FFFFFFF  # reserved bit ignored
        sid = frame.stream_id
        if not sid:
            if not increment:
                raise H2ProtocolError("WINDOW_UPDATE of 0 on the connection")  # §6.9
            self._send_window += increment
            if self._send_window > MAX_WINDOW:
                # §6.9.1: a connection error of type FLOW_CONTROL_ERROR.
                raise H2ProtocolError(
                    "connection window over 2^31-1", ErrorCodes.FLOW_CONTROL_ERROR
                )
            return
        if self._is_idle(sid):
            raise H2ProtocolError(f"WINDOW_UPDATE on idle stream {sid}")  # §5.1 idle
        stream = self._streams.get(sid)
        if stream is None or stream.reset or self._wire.get(sid) is not None:
            return  # §5.1: WINDOW_UPDATE may arrive on a closed stream for a while
        if not increment:
            self._stream_error(sid, ErrorCodes.PROTOCOL_ERROR, "WINDOW_UPDATE of 0")  # §6.9
            return
        stream.send_window += increment
        if stream.send_window > MAX_WINDOW:
            # §6.9.1: a stream error of type FLOW_CONTROL_ERROR.
            self._stream_error(sid, ErrorCodes.FLOW_CONTROL_ERROR, "stream window over 2^31-1")

    def _on_ping(self, frame: RawFrame) -> None:
        if frame.length != 8:
            raise H2ProtocolError("PING length", ErrorCodes.FRAME_SIZE_ERROR)  # §6.7
        payload = bytes(frame.payload)
        if frame.flags & frames.ACK:
            self._on_ping_ack(payload)
        else:
            self._pings.spend(self._now)  # CVE-2019-9512
            self._out += frames.ping_frame(payload, ack=True)

    def _on_ping_ack(self, payload: bytes) -> None:
        if payload == PROBE_PING and self._probe_sent is not None:
            self._probe_sent = None
            self._last_ping_ack = self._now
        elif payload == SHUTDOWN_PING and self._shutdown == 1:
            self._final_goaway()
        else:
            self._empty.spend(self._now)  # an acknowledgement of nothing we sent

    def _on_rst_stream(self, frame: RawFrame) -> None:
        if frame.length != 4:
            raise H2ProtocolError("RST_STREAM length", ErrorCodes.FRAME_SIZE_ERROR)  # §6.4
        sid = frame.stream_id
        if self._is_idle(sid):
            raise H2ProtocolError("RST_STREAM on an idle stream")  # §6.4
        stream = self._streams.get(sid)
        if stream is None or stream.reset or self._wire.get(sid) is not None:
            return  # §5.1: already closed; the client's RST_STREAM crossed ours
        self._resets.spend(self._now)  # CVE-2023-44487
        self._wire.add(sid, Closed.RESET_BY_PEER)
        self._stream_ended_by_reset(stream, int.from_bytes(frame.payload))

    def _on_priority(self, frame: RawFrame) -> None:
        # RFC 9113 §5.3.2: priority signals are ignored, but the frame is still checked.
        self._empty.spend(self._now)
        sid = frame.stream_id
        if frame.length != 5:
            self._stream_error(sid, ErrorCodes.FRAME_SIZE_ERROR, "PRIORITY length")  # §6.3
        elif int.from_bytes(frame.payload[:4]) & 0x7FFFFFFF == sid:
            self._stream_error(sid, ErrorCodes.PROTOCOL_ERROR, "stream depends on itself")

    def _on_priority_update(self, frame: RawFrame) -> None:
        """RFC 9218 §7.1: a new priority for a request stream, handed to the scheduler.

        The frame's connection errors are checked by ``parse_priority_update``. An update
        for an open stream, or for an idle one (kept until it opens, §7), goes to the
        scheduler; one for a closed stream is dropped: nothing more will be sent on it.
        """
        self._empty.spend(self._now)  # the frames cost work; a flood of them is bounded
        sid, value = parse_priority_update(frame.stream_id, frame.payload)
        stream = self._streams.get(sid)
        if (stream is not None and not stream.reset) or sid > self._wire.highest:
            self._scheduler.update(sid, value)

    def _on_goaway(self, frame: RawFrame) -> None:
        """RFC 9113 §6.8: a client's GOAWAY(NO_ERROR) stops new streams, not the ones in
        flight: they are answered, then the adapter closes. An error code ends the
        connection at once."""
        if frame.length < 8:
            raise H2ProtocolError("GOAWAY length", ErrorCodes.FRAME_SIZE_ERROR)
        if int.from_bytes(frame.payload[4:8]) == ErrorCodes.NO_ERROR:
            self.peer_goaway = True
            return
        self._closed = True
        self._ready.clear()
        self._events.append(ConnectionClosed())
