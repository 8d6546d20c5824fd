"""HTTP/2 frames (RFC 9113 §4, §6): reading received bytes into frames, and writing ours.

Reading: received bytes are split into frames, each checked once. A frame's length is
checked as soon as its 9-byte header has arrived (§4.2), before its payload is buffered,
and a header block (HEADERS + CONTINUATION) is collected under a byte and a frame limit
(CVE-2024-27316, the CONTINUATION flood). A frame that breaks a rule the frame layer can
judge alone raises ``H2ProtocolError``; the connection queues the GOAWAY.

Writing: one function per frame type the server sends. Each returns the bytes of a whole
frame; the connection appends them to its output buffer.
"""

from __future__ import annotations

import base64
import binascii
import struct
from dataclasses import dataclass, field

from preforkd.proto.h2.settings import (
    MAX_FRAME,
    MAX_WINDOW,
    MIN_FRAME,
    ErrorCodes,
    H2ProtocolError,
    SettingCodes,
)

__all__ = [
    "PREFACE",
    "FrameReader",
    "HeaderBlock",
    "RawFrame",
    "data_frame",
    "goaway_frame",
    "headers_frames",
    "parse_http2_settings",
    "parse_settings",
    "ping_frame",
    "rst_stream_frame",
    "settings_frame",
    "window_update_frame",
]

# RFC 9113 §3.4: the client connection preface, followed by a SETTINGS frame.
PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"

# Frame types (RFC 9113 §6) and flags.
DATA, HEADERS, PRIORITY, RST_STREAM, SETTINGS = 0x0, 0x1, 0x2, 0x3, 0x4
PUSH_PROMISE, PING, GOAWAY, WINDOW_UPDATE, CONTINUATION = 0x5, 0x6, 0x7, 0x8, 0x9
PRIORITY_UPDATE = 0x10  # RFC 9218 §7.1
END_STREAM = ACK = 0x1
END_HEADERS, PADDED, PRIORITY_FLAG = 0x4, 0x8, 0x20

# RFC 9113 §4.1 / §5.1.1: frames that belong to a stream MUST NOT use stream 0, connection
# frames MUST use it (PROTOCOL_ERROR either way). WINDOW_UPDATE and unknown types may use any.
_NEEDS_STREAM = frozenset((DATA, HEADERS, PRIORITY, RST_STREAM, PUSH_PROMISE, CONTINUATION))
_NEEDS_ZERO = frozenset((SETTINGS, PING, GOAWAY))

# h2's frame buffer holds at most 64 frames of a header block (its CONTINUATION_BACKLOG);
# we keep its bound on the count and add one on the bytes (see HeaderBlock).
MAX_BLOCK_FRAMES = 64

_HEADER_LEN = 9
# The 9-byte frame header (RFC 9113 §4.1): a 24-bit length (as 16 + 8 bits), the type,
# the flags, and the reserved bit with the 31-bit stream identifier.
_HEAD = struct.Struct(">HBBBL")


@dataclass(slots=True)
class RawFrame:
    """One complete frame as received (its 9-byte header parsed into the fields)."""

    type: int
    flags: int
    stream_id: int
    payload: bytes  # its own copy, so a DATA payload goes to wsgi.input as it is

    @property
    def length(self) -> int:
        return len(self.payload)


class FrameReader:
    """Collects received bytes and hands out complete frames, checking preface and sizes.

    Two ways in. ``feed(data)``: the bytes of one read. ``get_buffer(scratch)`` then
    ``buffer_updated(nbytes)`` (asyncio.BufferedProtocol): the transport reads straight
    into a buffer the adapter lends for that one read (``scratch``, shared by all the
    connections of a worker: one read is cut into frames before the next begins), which
    spares a copy of every received byte. Either way, each frame's payload is copied
    once, into bytes of its own: a DATA payload goes to wsgi.input as it is, and no read
    buffer stays alive or is overwritten under it. The beginning of a frame split across
    reads waits in ``_partial`` (at most one frame: its length is checked first).
    """

    __slots__ = (
        "_buffer",
        "_end",
        "_lead",
        "_max_frame_size",
        "_partial",
        "_preface_left",
        "_start",
    )

    def __init__(self, max_frame_size: int) -> None:
        self._buffer = _NOTHING  # bytes being cut into frames, from _start to _end
        self._start = self._end = 0
        self._partial = bytearray()  # received before _buffer, not handed out yet
        self._lead = 0  # bytes of _partial moved to the front of the lent buffer
        self._max_frame_size = max_frame_size
        self._preface_left = len(PREFACE)

    @property
    def preface_received(self) -> bool:
        return not self._preface_left

    def feed(self, data: bytes) -> None:
        """The bytes of one read."""
        self.settle()
        self._buffer = memoryview(data)
        self._start, self._end = 0, len(data)
        if self._preface_left:
            self._check_preface()

    def get_buffer(self, scratch: bytearray) -> memoryview:
        """Where the next read goes: ``scratch``, after the beginning of a frame that an
        earlier read left (if that is not too big to move). Call ``buffer_updated`` next."""
        self.settle()
        view = memoryview(scratch)
        partial = self._partial
        lead = len(partial)
        if lead and lead <= len(scratch) // 2:
            # Copied, not moved: a read that brings nothing (EAGAIN) calls no
            # buffer_updated, and another connection's read may then overwrite scratch.
            view[:lead] = partial
        else:
            lead = 0  # the bytes are appended to _partial instead (a large frame)
        self._lead = lead
        self._buffer = view
        return view[lead:]

    def buffer_updated(self, nbytes: int) -> None:
        """``nbytes`` were read into the buffer ``get_buffer`` returned."""
        if self._lead:
            self._partial.clear()  # now in front of the read
        self._start, self._end = 0, self._lead + nbytes
        self._lead = 0
        if self._preface_left:
            self._check_preface()

    def settle(self) -> None:
        """Keep what is not handed out yet in ``_partial``: the buffer may be reused."""
        self._lead = 0
        if self._start < self._end:
            self._partial += self._buffer[self._start : self._end]
        self._buffer = _NOTHING
        self._start = self._end = 0

    def _check_preface(self) -> None:
        # Compare as the bytes arrive, so a client speaking something else (HTTP/1.1, TLS
        # to a plain port) is refused at its first bytes (RFC 9113 §3.4).
        start = self._start
        offset = len(PREFACE) - self._preface_left
        take = min(self._preface_left, self._end - start)
        if self._buffer[start : start + take] != PREFACE[offset : offset + take]:
            raise H2ProtocolError("invalid connection preface")
        self._preface_left -= take
        self._start = start + take

    def next_frame(self) -> tuple[int, int, int, bytes] | None:
        """The next complete frame as (type, flags, stream id, payload), or None until more
        bytes arrive. A tuple, not a ``RawFrame``: an upload is 64 DATA frames per MiB, and
        the receiving side handles DATA without building an object for it."""
        if self._partial:
            return self._next_split_frame()
        buffer, start, end = self._buffer, self._start, self._end
        if end - start < _HEADER_LEN:
            self.settle()
            return None
        high, low, kind, flags, stream_id = _HEAD.unpack_from(buffer, start)
        length = high << 8 | low
        if length > self._max_frame_size:
            raise _oversized(length)
        stop = start + _HEADER_LEN + length
        if end < stop:
            self.settle()
            return None
        payload = bytes(buffer[start + _HEADER_LEN : stop])
        self._start = stop
        # RFC 9113 §4.1: the reserved bit of the stream identifier MUST be ignored.
        stream_id &= 0x7FFFFFFF
        if stream_id == 0:
            if kind in _NEEDS_STREAM:
                raise H2ProtocolError(f"frame type {kind} on stream 0")
        elif kind in _NEEDS_ZERO:
            raise H2ProtocolError(f"frame type {kind} on stream {stream_id}")
        return kind, flags, stream_id, payload

    def _top_up(self, size: int) -> bool:
        """Complete ``_partial`` to ``size`` bytes from the read; False if it is too short."""
        partial, start = self._partial, self._start
        take = min(size - len(partial), self._end - start)
        if take > 0:
            partial += self._buffer[start : start + take]
            self._start = start + take
        return len(partial) >= size

    def _next_split_frame(self) -> tuple[int, int, int, bytes] | None:
        partial = self._partial
        if not self._top_up(_HEADER_LEN):
            return None
        high, low, kind, flags, stream_id = _HEAD.unpack_from(partial, 0)
        length = high << 8 | low
        if length > self._max_frame_size:
            raise _oversized(length)  # before the payload is buffered
        end = _HEADER_LEN + length
        if not self._top_up(end):
            return None
        with memoryview(partial) as view:
            payload = bytes(view[_HEADER_LEN:end])
        del partial[:end]
        stream_id &= 0x7FFFFFFF  # RFC 9113 §4.1, as in next_frame
        if stream_id == 0:
            if kind in _NEEDS_STREAM:
                raise H2ProtocolError(f"frame type {kind} on stream 0")
        elif kind in _NEEDS_ZERO:
            raise H2ProtocolError(f"frame type {kind} on stream {stream_id}")
        return kind, flags, stream_id, payload


_NOTHING = memoryview(b"")


def _oversized(length: int) -> H2ProtocolError:
    # RFC 9113 §4.2: FRAME_SIZE_ERROR; a connection error is always allowed, and we refuse
    # before buffering the payload.
    return H2ProtocolError(
        f"frame of {length} bytes exceeds SETTINGS_MAX_FRAME_SIZE", ErrorCodes.FRAME_SIZE_ERROR
    )


@dataclass(slots=True)
class HeaderBlock:
    """A field block being received: a HEADERS frame and its CONTINUATION frames.

    ``max_size`` bounds the encoded bytes kept (RFC 9113 §10.5.1 lets us refuse a block we
    are not willing to process; we cannot keep HPACK state in sync without decoding it, so
    the connection goes: GOAWAY(ENHANCE_YOUR_CALM)).
    """

    stream_id: int
    end_stream: bool
    depends_on_itself: bool
    max_size: int
    fragments: list[bytes] = field(default_factory=list)
    size: int = 0
    frames: int = 0

    @classmethod
    def start(cls, frame: RawFrame, max_size: int) -> HeaderBlock:
        """Parse a HEADERS frame (RFC 9113 §6.2): padding and priority fields stripped."""
        payload = frame.payload
        flags = frame.flags
        pos = pad = 0
        if flags & PADDED:
            if not payload:
                raise H2ProtocolError(
                    "HEADERS too short for its padding", ErrorCodes.FRAME_SIZE_ERROR
                )
            pad = payload[0]
            pos = 1
        dependency = None
        if flags & PRIORITY_FLAG:
            if len(payload) < pos + 5:
                raise H2ProtocolError(
                    "HEADERS too short for its priority", ErrorCodes.FRAME_SIZE_ERROR
                )
            dependency = int.from_bytes(payload[pos : pos + 4]) & 0x7FFFFFFF
            pos += 5
        if pad > len(payload) - pos:
            # §6.2: padding that exceeds the remaining size MUST be a PROTOCOL_ERROR.
            raise H2ProtocolError("HEADERS padding exceeds the frame")
        block = cls(
            frame.stream_id, bool(flags & END_STREAM), dependency == frame.stream_id, max_size
        )
        block.add(payload[pos : len(payload) - pad])
        return block

    def add(self, fragment: bytes | memoryview) -> None:
        self.frames += 1
        self.size += len(fragment)
        if self.size > self.max_size or self.frames > MAX_BLOCK_FRAMES:
            raise H2ProtocolError(
                f"header block over {self.max_size} bytes or {MAX_BLOCK_FRAMES} frames",
                ErrorCodes.ENHANCE_YOUR_CALM,
            )
        if fragment:
            self.fragments.append(bytes(fragment))

    def data(self) -> bytes:
        return b"".join(self.fragments)


def _frame(kind: int, flags: int, stream_id: int, payload: bytes) -> bytes:
    return b"".join(
        (len(payload).to_bytes(3), bytes((kind, flags)), stream_id.to_bytes(4), payload)
    )


def headers_frames(stream_id: int, block: bytes, end_stream: bool, max_size: int) -> bytes:
    """A field block as a HEADERS frame and as many CONTINUATION frames as the peer's
    SETTINGS_MAX_FRAME_SIZE needs (RFC 9113 §6.2, §6.10), without padding or priority."""
    flags = END_STREAM if end_stream else 0
    if len(block) <= max_size:
        return _frame(HEADERS, flags | END_HEADERS, stream_id, block)
    parts = [_frame(HEADERS, flags, stream_id, block[:max_size])]
    for start in range(max_size, len(block), max_size):
        last = start + max_size >= len(block)
        chunk = block[start : start + max_size]
        parts.append(_frame(CONTINUATION, END_HEADERS if last else 0, stream_id, chunk))
    return b"".join(parts)


def data_frame(stream_id: int, data: bytes, end_stream: bool) -> bytes:
    return _frame(DATA, END_STREAM if end_stream else 0, stream_id, data)


def settings_frame(settings: dict[int, int]) -> bytes:
    payload = b"".join(k.to_bytes(2) + v.to_bytes(4) for k, v in settings.items())
    return _frame(SETTINGS, 0, 0, payload)


SETTINGS_ACK = _frame(SETTINGS, ACK, 0, b"")


def ping_frame(payload: bytes, ack: bool = False) -> bytes:
    return _frame(PING, ACK if ack else 0, 0, payload)


def rst_stream_frame(stream_id: int, error_code: int) -> bytes:
    return _frame(RST_STREAM, 0, stream_id, int(error_code).to_bytes(4))


def goaway_frame(last_stream_id: int, error_code: int) -> bytes:
    payload = last_stream_id.to_bytes(4) + int(error_code).to_bytes(4)
    return _frame(GOAWAY, 0, 0, payload)


def window_update_frame(stream_id: int, increment: int) -> bytes:
    return _frame(WINDOW_UPDATE, 0, stream_id, increment.to_bytes(4))


def parse_settings(payload: bytes | memoryview) -> dict[int, int]:
    """The values of a SETTINGS payload a client sent, checked (RFC 9113 §6.5, §6.5.2).

    Raises ``H2ProtocolError``: FRAME_SIZE_ERROR for a length that is not a multiple of 6,
    FLOW_CONTROL_ERROR for an initial window over 2^31-1, PROTOCOL_ERROR for the other
    values out of range. Unknown settings are ignored (§6.5.2); a repeated one takes the
    last value (§6.5.3: processed in order).
    """
    if len(payload) % 6:
        raise H2ProtocolError("SETTINGS length", ErrorCodes.FRAME_SIZE_ERROR)
    values: dict[int, int] = {}
    for offset in range(0, len(payload), 6):
        code = int.from_bytes(payload[offset : offset + 2])
        value = int.from_bytes(payload[offset + 2 : offset + 6])
        if code == SettingCodes.INITIAL_WINDOW_SIZE and value > MAX_WINDOW:
            raise H2ProtocolError("SETTINGS_INITIAL_WINDOW_SIZE", ErrorCodes.FLOW_CONTROL_ERROR)
        if code == SettingCodes.MAX_FRAME_SIZE and not MIN_FRAME <= value <= MAX_FRAME:
            raise H2ProtocolError("SETTINGS_MAX_FRAME_SIZE out of range")
        if code in _BOOLEAN_SETTINGS and value > 1:
            raise H2ProtocolError(f"SETTINGS parameter {code} must be 0 or 1")
        values[code] = value
    return values


# RFC 9113 §6.5.2 (ENABLE_PUSH), RFC 8441 §3, RFC 9218 §2.1: 0 or 1, else PROTOCOL_ERROR.
_BOOLEAN_SETTINGS = frozenset(
    (
        SettingCodes.ENABLE_PUSH,
        SettingCodes.ENABLE_CONNECT_PROTOCOL,
        SettingCodes.NO_RFC7540_PRIORITIES,
    )
)


def parse_http2_settings(value: str) -> dict[int, int]:
    """The client settings of an HTTP2-Settings value (RFC 7540 §3.2.1: a SETTINGS payload
    in base64url, usually without padding).

    Raises ``ValueError`` when it is not valid base64url or not valid client settings.
    """
    text = value.strip()
    try:
        payload = base64.b64decode(text + "=" * (-len(text) % 4), altchars=b"-_", validate=True)
    except binascii.Error as exc:
        raise ValueError("not base64url") from exc
    try:
        return parse_settings(payload)
    except H2ProtocolError as exc:
        raise ValueError(str(exc)) from exc
