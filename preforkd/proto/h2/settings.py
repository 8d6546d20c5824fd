"""Settings and abuse limits of the HTTP/2 core, its error codes, and the error it raises.

Every number here is a limit a peer can push against, so each one names its precedent.
The core has no clock: the flood budgets count against the ``now`` the adapter passes to
``H2Connection.receive_data``.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from preforkd.errors import RemoteProtocolError

__all__ = ["Budget", "ErrorCodes", "H2ProtocolError", "H2Settings", "SettingCodes"]


class ErrorCodes(enum.IntEnum):
    """RFC 9113 §7: the error codes of RST_STREAM and GOAWAY (the same values as h2's)."""

    NO_ERROR = 0x0
    PROTOCOL_ERROR = 0x1
    INTERNAL_ERROR = 0x2
    FLOW_CONTROL_ERROR = 0x3
    SETTINGS_TIMEOUT = 0x4
    STREAM_CLOSED = 0x5
    FRAME_SIZE_ERROR = 0x6
    REFUSED_STREAM = 0x7
    CANCEL = 0x8
    COMPRESSION_ERROR = 0x9
    CONNECT_ERROR = 0xA
    ENHANCE_YOUR_CALM = 0xB
    INADEQUATE_SECURITY = 0xC
    HTTP_1_1_REQUIRED = 0xD


class SettingCodes(enum.IntEnum):
    """RFC 9113 §6.5.2, RFC 8441 §3 and RFC 9218 §2.1: the SETTINGS parameters we know."""

    HEADER_TABLE_SIZE = 0x1
    ENABLE_PUSH = 0x2
    MAX_CONCURRENT_STREAMS = 0x3
    INITIAL_WINDOW_SIZE = 0x4
    MAX_FRAME_SIZE = 0x5
    MAX_HEADER_LIST_SIZE = 0x6
    ENABLE_CONNECT_PROTOCOL = 0x8
    NO_RFC7540_PRIORITIES = 0x9


# RFC 9113 §6.9.1: the largest flow-control window.
MAX_WINDOW = 2**31 - 1
# RFC 9113 §6.5.2: the range of SETTINGSMAX_FRAME_SIZE.
MIN_FRAME, MAX_FRAME = 2**14, 2**24 - 1
# RFC 9113 §6.9.2: the initial window of streams and of the connection.
DEFAULT_WINDOW = 65535


@dataclass(frozen=True, slots=True)
class H2Settings:
    """What we advertise in our SETTINGS frame, and how much abuse we tolerate."""

    # RFC 9113 §6.5.2 recommends no less than 100 (so do nginx and Go); each stream is an
    # application call on the worker's thread pool, so this also bounds a client's share.
    max_concurrent_streams: int = 100
    # Our receive window per stream (SETTINGS_INITIAL_WINDOW_SIZE): how much request body a
    # client may send ahead of the application reading it. 256 KiB: four times the RFC
    # default, so an upload is not limited to 64 KiB per round trip.
    initial_window_size: int = DEFAULT_WINDOW * 4
    # Our connection receive window, shared by all streams; bounds the request-body bytes
    # buffered per connection. 1 MiB is Go's MaxUploadBufferPerConnection default.
    connection_window_size: int = 1 << 20
    # The largest frame payload we accept (SETTINGSMAX_FRAME_SIZE): the RFC minimum, so a
    # frame is buffered whole before it is parsed at no more than 16 KiB.
    max_frame_size: int = MIN_FRAME
    # SETTINGS_MAX_HEADER_LIST_SIZE, counted as RFC 9113 §6.5.2 does (name + value + 32 per
    # field). 64 KiB is h2's and hpack's default; nginx allows 4 x 8 KiB header lines.
    max_header_list_size: int = 65536
    # The HTTP/1.1 limits, applied alike (--limit-request-line, --limit-request-field-size):
    # a :path longer than the request line may be is answered 414, a field larger than a
    # header line may be 431, by the server itself (RFC 9110 §15.5.15, RFC 6585 §5).
    max_request_line: int = 8190
    max_field_size: int = 8190
    # Flood budgets, each counted in fixed windows of ``flood_window`` seconds; exceeding one
    # is answered with GOAWAY(ENHANCE_YOUR_CALM). 200 resets per 30 s is Netty's fix for
    # CVE-2023-44487 (rapid reset). The others are generous for real clients, which send a
    # SETTINGS frame or two and PING rarely (gRPC keepalives: one per 10 s or slower), while
    # CVE-2019-9512 (ping flood), -9515 (settings flood) and -9518 (empty frames) send
    # thousands per second.
    flood_window: float = 30.0
    max_resets: int = 200  # RST_STREAM from the client, plus streams we refuse or reset
    max_pings: int = 100
    max_settings: int = 100
    # Frames that cost work but carry nothing: PRIORITY (ignored, RFC 9113 §5.3.2), empty
    # DATA without END_STREAM, empty CONTINUATION, unknown extension frames, unsolicited
    # PING acknowledgements.
    max_empty_frames: int = 1000

    def __post_init__(self) -> None:
        ranges = {
            "max_concurrent_streams": (1, MAX_WINDOW),
            # Smaller than the RFC default would be unenforceable until the client has seen
            # our SETTINGS: it may send 65535 bytes on a stream before that.
            "initial_window_size": (DEFAULT_WINDOW, MAX_WINDOW),
            "connection_window_size": (DEFAULT_WINDOW, MAX_WINDOW),
            "max_frame_size": (MIN_FRAME, MAX_FRAME),
            "max_header_list_size": (1024, MAX_WINDOW),
            "max_resets": (1, MAX_WINDOW),
            "max_pings": (1, MAX_WINDOW),
            "max_settings": (1, MAX_WINDOW),
            "max_empty_frames": (1, MAX_WINDOW),
        }
        for name, (low, high) in ranges.items():
            value = getattr(self, name)
            if type(value) is not int or not low <= value <= high:
                raise ValueError(f"H2Settings.{name} must be an int in [{low}, {high}]")
        if not self.flood_window > 0:
            raise ValueError("H2Settings.flood_window must be positive")


class H2ProtocolError(RemoteProtocolError):
    """The peer broke HTTP/2 badly enough to lose the connection.

    By the time this is raised a GOAWAY carrying ``error_code`` has been queued: the adapter
    flushes ``data_to_send()`` and closes the transport (RFC 9113 §5.4.1). ``error_code`` is
    ``ENHANCE_YOUR_CALM`` when a flood limit was exceeded.
    """

    def __init__(self, message: str, error_code: int = ErrorCodes.PROTOCOL_ERROR) -> None:
        super().__init__(message, 400)
        self.error_code = error_code


class Budget:
    """At most ``limit`` occurrences per fixed window of ``window`` seconds."""

    __slots__ = ("_count", "_limit", "_start", "_window", "name")

    def __init__(self, name: str, limit: int, window: float) -> None:
        self.name = name
        self._limit = limit
        self._window = window
        self._start: float | None = None
        self._count = 0

    def spend(self, now: float) -> None:
        """Count one occurrence; raise ``H2ProtocolError(ENHANCE_YOUR_CALM)`` past the limit."""
        start = self._start
        if start is None or not start <= now < start + self._window:
            self._start = now  # a new window (a clock that went backwards starts one too)
            self._count = 0
        self._count += 1
        if self._count > self._limit:
            raise H2ProtocolError(
                f"too many {self.name} (more than {self._limit} in {self._window:g} s)",
                ErrorCodes.ENHANCE_YOUR_CALM,
            )
