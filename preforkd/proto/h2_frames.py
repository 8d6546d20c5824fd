"""The frame layer in front of h2: splits received bytes into frames and checks each one.

h2's own frame buffer waits for a whole frame before it looks at its length, and keeps up
to 64 CONTINUATION frames of any size; here a frame's length is checked as soon as its
9-byte header has arrived, and a header block (HEADERS + CONTINUATION) is collected under
a byte limit (CVE-2024-27316, the CONTINUATION flood). A frame that breaks a rule the
frame layer can judge alone raises ``H2ProtocolError``; the connection queues the GOAWAY.

It also builds the few frames the connection writes itself (SETTINGS, GOAWAY, the stand-in
HEADERS frames it hands to h2).
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass, field

from h2.exceptions import InvalidSettingsValueError
from h2.settings import Settings

from preforkd.proto.h2_config import ErrorCodes, H2ProtocolError

__all__ = [
    "PREFACE",
    "FrameReader",
    "HeaderBlock",
    "RawFrame",
    "goaway_frame",
    "headers_frame",
    "parse_http2_settings",
    "settings_frame",
    "window_update_frame",
]

# RFC 9113 §3.4: the client connection preface, followed by a SETTINGS frame.
PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"

# Frame types (RFC 9113 §6) and flags.
DATA, HEADERS, PRIORITY, RST_STREAM, SETTINGS = 0x0, 0x1, 0x2, 0x3, 0x4
PUSH_PROMISE, PING, GOAWAY, WINDOW_UPDATE, CONTINUATION = 0x5, 0x6, 0x7, 0x8, 0x9
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


@dataclass(slots=True)
class RawFrame:
    """One complete frame as received: ``raw`` is the 9-byte header and the payload."""

    type: int
    flags: int
    stream_id: int
    raw: bytes

    @property
    def payload(self) -> memoryview:
        return memoryview(self.raw)[_HEADER_LEN:]

    @property
    def length(self) -> int:
        return len(self.raw) - _HEADER_LEN


class FrameReader:
    """Collects received bytes and hands out complete frames, checking preface and sizes."""

    __slots__ = ("_buffer", "_max_frame_size", "_preface_left", "_start")

    def __init__(self, max_frame_size: int) -> None:
        self._buffer = bytearray()
        self._start = 0  # bytes of _buffer already handed out
        self._max_frame_size = max_frame_size
        self._preface_left = len(PREFACE)

    @property
    def preface_received(self) -> bool:
        return not self._preface_left

    def feed(self, data: bytes) -> None:
        if self._preface_left:
            # Compare as the bytes arrive, so a client speaking something else (HTTP/1.1, TLS
            # to a plain port) is refused at its first bytes (RFC 9113 §3.4).
            offset = len(PREFACE) - self._preface_left
            take = min(self._preface_left, len(data))
            if data[:take] != PREFACE[offset : offset + take]:
                raise H2ProtocolError("invalid connection preface")
            self._preface_left -= take
            data = data[take:]
        self._buffer += data

    def next_frame(self) -> RawFrame | None:
        """The next complete frame, or None until more bytes arrive."""
        buffer, start = self._buffer, self._start
        if len(buffer) - start < _HEADER_LEN:
            self._compact()
            return None
        length = int.from_bytes(buffer[start : start + 3])
        if length > self._max_frame_size:
            # RFC 9113 §4.2: FRAME_SIZE_ERROR; a connection error is always allowed, and we
            # refuse before buffering the payload.
            raise H2ProtocolError(
                f"frame of {length} bytes exceeds SETTINGS_MAX_FRAME_SIZE",
                ErrorCodes.FRAME_SIZE_ERROR,
            )
        end = start + _HEADER_LEN + length
        if len(buffer) < end:
            self._compact()
            return None
        with memoryview(buffer) as view:  # one copy, and the view is released
            raw = bytes(view[start:end])
        self._start = end
        kind, flags = raw[3], raw[4]
        # RFC 9113 §4.1: the reserved bit of the stream identifier MUST be ignored.
        stream_id = int.from_bytes(raw[5:9]) & 0x7FFFFFFF
        if stream_id == 0 and kind in _NEEDS_STREAM:
            raise H2ProtocolError(f"frame type {kind} on stream 0")
        if stream_id and kind in _NEEDS_ZERO:
            raise H2ProtocolError(f"frame type {kind} on stream {stream_id}")
        return RawFrame(kind, flags, stream_id, raw)

    def _compact(self) -> None:
        if self._start:
            del self._buffer[: self._start]
            self._start = 0


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

    def add(self, fragment: memoryview) -> None:
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


def headers_frame(stream_id: int, block: bytes, end_stream: bool) -> bytes:
    """A complete (END_HEADERS) HEADERS frame, without padding or priority."""
    flags = END_HEADERS | (END_STREAM if end_stream else 0)
    return _frame(HEADERS, flags, stream_id, block)


def settings_frame(settings: dict[int, int]) -> bytes:
    payload = b"".join(k.to_bytes(2) + v.to_bytes(4) for k, v in settings.items())
    return _frame(SETTINGS, 0, 0, payload)


def goaway_frame(last_stream_id: int, error_code: int) -> bytes:
    payload = last_stream_id.to_bytes(4) + int(error_code).to_bytes(4)
    return _frame(GOAWAY, 0, 0, payload)


def window_update_frame(stream_id: int, increment: int) -> bytes:
    return _frame(WINDOW_UPDATE, 0, stream_id, increment.to_bytes(4))


def parse_http2_settings(value: str) -> bytes:
    """Check an HTTP2-Settings value (RFC 7540 §3.2.1: a SETTINGS payload in base64url,
    usually without padding); return it re-encoded with padding, as h2 wants it.

    Raises ``ValueError`` when it is not valid base64url or not valid client settings.
    """
    text = value.strip()
    try:
        payload = base64.b64decode(text + "=" * (-len(text) % 4), altchars=b"-_", validate=True)
    except binascii.Error as exc:
        raise ValueError("not base64url") from exc
    if len(payload) % 6:
        raise ValueError("not a whole number of settings")
    check = Settings(client=True)  # the values a client may send (RFC 9113 §6.5.2)
    for offset in range(0, len(payload), 6):
        code = int.from_bytes(payload[offset : offset + 2])
        setting = int.from_bytes(payload[offset + 2 : offset + 6])
        try:
            check.validate_received_setting(code, setting)
        except InvalidSettingsValueError as exc:
            raise ValueError(str(exc)) from exc
    return base64.urlsafe_b64encode(payload)
