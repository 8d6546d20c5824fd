"""A raw, frame-level HTTP/2 client connection for conformance tests (h2spec style).

Unlike ``h2client`` (which drives the ``h2`` library and so can only say what a correct
client says), this connection sends whatever bytes a test builds -- malformed frames
included -- and reads the server's frames back with ``hyperframe``, decoding header blocks
with ``hpack``. Every read has a deadline; nothing sleeps.

The ``expect_*`` methods apply the verdicts of h2spec (summerwind/h2spec, ``spec/verifier.go``):

* a *connection error* X is a GOAWAY carrying X, or the connection closed (h2spec accepts
  a close without GOAWAY; RFC 9113 §5.4.1 only says SHOULD send GOAWAY first);
* a *stream error* X on stream N is RST_STREAM(X) on N, or -- as h2spec accepts, and RFC
  9113 §5.4.2 allows ("an endpoint can end a connection at any time") -- a GOAWAY carrying
  X, or the connection closed.

Where h2spec would keep waiting past a GOAWAY or RST_STREAM with another error code, these
helpers fail at once, naming what came: a wrong code is never a pass.
"""

from __future__ import annotations

import contextlib
import socket
import ssl
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from h2.errors import ErrorCodes
from hpack import Decoder, Encoder
from hpack.huffman_constants import REQUEST_CODES, REQUEST_CODES_LENGTH
from hyperframe.frame import (
    ContinuationFrame,
    DataFrame,
    Frame,
    GoAwayFrame,
    HeadersFrame,
    PingFrame,
    RstStreamFrame,
    SettingsFrame,
)

__all__ = [
    "PREFACE",
    "H2Conn",
    "Headers",
    "Response",
    "Transport",
    "describe",
    "hpack_int",
    "hpack_string",
    "huffman",
    "raw_frame",
]

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
DEFAULT_TIMEOUT = 5.0

# Frame types and flags (RFC 9113 §6), for hand-built frames.
DATA, HEADERS, PRIORITY, RST_STREAM, SETTINGS = 0x0, 0x1, 0x2, 0x3, 0x4
PUSH_PROMISE, PING, GOAWAY, WINDOW_UPDATE, CONTINUATION = 0x5, 0x6, 0x7, 0x8, 0x9
END_STREAM = ACK = 0x1
END_HEADERS, PADDED, PRIORITY_FLAG = 0x4, 0x8, 0x20

# Settings identifiers (RFC 9113 §6.5.2).
HEADER_TABLE_SIZE, ENABLE_PUSH, MAX_CONCURRENT_STREAMS = 0x1, 0x2, 0x3
INITIAL_WINDOW_SIZE, MAX_FRAME_SIZE, MAX_HEADER_LIST_SIZE = 0x4, 0x5, 0x6

Headers = list[tuple[str, str]]


@dataclass(frozen=True)
class Transport:
    """Where and how to reach the server: cleartext prior knowledge, or TLS with ALPN h2."""

    name: str
    port: int
    tls: ssl.SSLContext | None = None

    @property
    def scheme(self) -> str:
        return "https" if self.tls is not None else "http"


@dataclass
class Response:
    """A response read off one stream: decoded header blocks and body bytes."""

    stream_id: int
    headers: list[tuple[bytes, bytes]] = field(default_factory=list)
    trailers: list[tuple[bytes, bytes]] = field(default_factory=list)
    body: bytearray = field(default_factory=bytearray)
    ended: bool = False

    @property
    def status(self) -> int:
        return int(dict(self.headers).get(b":status", b"0"))


def raw_frame(kind: int, flags: int, stream_id: int, payload: bytes = b"") -> bytes:
    """A frame exactly as given: ``stream_id`` may carry the reserved bit (0x80000000)."""
    return (
        len(payload).to_bytes(3, "big")
        + bytes((kind, flags))
        + stream_id.to_bytes(4, "big")
        + payload
    )


def hpack_int(value: int, prefix_bits: int, first: int = 0) -> bytes:
    """An HPACK integer (RFC 7541 §5.1) with ``first``'s high bits as the pattern."""
    limit = (1 << prefix_bits) - 1
    if value < limit:
        return bytes((first | value,))
    out = bytearray((first | limit,))
    value -= limit
    while value >= 128:
        out.append(0x80 | (value & 0x7F))
        value >>= 7
    out.append(value)
    return bytes(out)


def huffman(data: bytes, *, pad_with_ones: bool = True, eos_before: int | None = None) -> bytes:
    """Huffman-code ``data`` (RFC 7541 §5.2 and Appendix B), optionally wrongly.

    ``pad_with_ones=False`` pads with zero bits (not the EOS prefix: a decoding error);
    ``eos_before=i`` puts the 30-bit EOS code before byte ``i`` (a decoding error too).
    """
    number = bits = 0
    for index, byte in enumerate(data):
        if index == eos_before:
            number, bits = number << REQUEST_CODES_LENGTH[256] | REQUEST_CODES[256], bits + 30
        number = number << REQUEST_CODES_LENGTH[byte] | REQUEST_CODES[byte]
        bits += REQUEST_CODES_LENGTH[byte]
    pad = -bits % 8
    number = number << pad | ((1 << pad) - 1 if pad_with_ones else 0)
    return number.to_bytes((bits + pad) // 8, "big")


def hpack_string(data: bytes, *, huffman_coded: bool = False) -> bytes:
    """An HPACK string literal (RFC 7541 §5.2); ``data`` is already coded if Huffman."""
    return hpack_int(len(data), 7, 0x80 if huffman_coded else 0) + data


def describe(frame: Frame) -> str:
    """One frame, compactly, for failure messages."""
    name = type(frame).__name__.removesuffix("Frame").upper()
    flags = ",".join(sorted(frame.flags)) if frame.flags else ""
    text = f"{name}[stream {frame.stream_id}{', ' + flags if flags else ''}]"
    if isinstance(frame, (GoAwayFrame, RstStreamFrame)):
        text += f"({_code_name(frame.error_code)})"
    if isinstance(frame, DataFrame):
        text += f"(len {len(frame.data)})"
    if isinstance(frame, PingFrame):
        text += f"({bytes(frame.opaque_data)!r})"
    if isinstance(frame, GoAwayFrame):
        text += f"(last {frame.last_stream_id}, {bytes(frame.additional_data)!r})"
    return text


def _code_name(code: int) -> str:
    try:
        return ErrorCodes(code).name
    except ValueError:
        return f"0x{code:x}"


class H2Conn:
    """One raw HTTP/2 connection to the server. Use as a context manager."""

    def __init__(self, transport: Transport, timeout: float = DEFAULT_TIMEOUT) -> None:
        self.transport = transport
        self.timeout = timeout
        sock = socket.create_connection(("127.0.0.1", transport.port), timeout=timeout)
        if transport.tls is not None:
            tls = transport.tls.wrap_socket(sock, server_hostname="127.0.0.1")
            if tls.selected_alpn_protocol() != "h2":
                tls.close()
                raise AssertionError(f"ALPN chose {tls.selected_alpn_protocol()!r}, not h2")
            sock = tls
        self.sock: socket.socket = sock
        self.encoder = Encoder()
        self.decoder = Decoder()
        self.server_settings: dict[int, int] = {}
        self.received: list[Frame] = []  # every frame read, in order (for messages)
        self.closed = False  # the server closed (EOF or reset)
        self._buffer = bytearray()
        self._block: list[bytes] = []  # a response header block being received
        self._responses: dict[int, Response] = {}

    def __enter__(self) -> H2Conn:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.close()

    # -- sending ---------------------------------------------------------------------------

    def send(self, *chunks: bytes | Frame) -> None:
        """Write frames (hyperframe objects or bytes) in one write.

        A write the server no longer reads (it closed after an error) is not a failure:
        h2spec ignores write errors too, and the reads say what happened.
        """
        data = b"".join(c if isinstance(c, bytes) else c.serialize() for c in chunks)
        with contextlib.suppress(OSError):
            self.sock.sendall(data)

    def encode(self, headers: Iterable[tuple[str, str]]) -> bytes:
        """HPACK-encode with this connection's encoder (the server's decoder follows it)."""
        return self.encoder.encode(list(headers))

    def request_headers(self, method: str = "GET", path: str = "/") -> Headers:
        """h2spec's common request fields: :method, :scheme, :path, :authority."""
        return [
            (":method", method),
            (":scheme", self.transport.scheme),
            (":path", path),
            (":authority", f"127.0.0.1:{self.transport.port}"),
        ]

    def headers_frame(
        self,
        stream_id: int,
        headers: Headers | None = None,
        *,
        end_stream: bool = True,
        end_headers: bool = True,
        block: bytes | None = None,
        **kw: object,
    ) -> HeadersFrame:
        """A HEADERS frame whose block is ``block`` or ``headers``.

        The default request is a GET of "/" (answered at once), or of "/echo" when the
        request stays open: that application reads the whole body before it answers, so
        the server cannot close the stream early (RST_STREAM(NO_ERROR), RFC 9113 §8.1)
        before the frames a test sends next have arrived.
        """
        if block is None and headers is None:
            headers = self.request_headers(path="/" if end_stream else "/echo")
        if block is None:
            block = self.encode(headers or [])
        flags = [
            *(["END_STREAM"] if end_stream else []),
            *(["END_HEADERS"] if end_headers else []),
        ]
        if kw.get("pad_length"):
            flags.append("PADDED")
        if "depends_on" in kw or "stream_weight" in kw or "exclusive" in kw:
            flags.append("PRIORITY")
        return HeadersFrame(stream_id, block, flags=flags, **kw)

    def continuation(
        self, stream_id: int, block: bytes, *, end_headers: bool = True
    ) -> ContinuationFrame:
        return ContinuationFrame(stream_id, block, flags=["END_HEADERS"] if end_headers else [])

    def dummy_block(self, count: int = 1, size: int = 4000) -> bytes:
        """h2spec's DummyHeaders: ``count`` fields x-dummyN of ``size`` bytes, encoded."""
        return self.encode([(f"x-dummy{i}", "x" * size) for i in range(count)])

    def handshake(self, settings: dict[int, int] | None = None) -> None:
        """Preface and SETTINGS, then wait for the server's SETTINGS and its ACK of ours.

        The server's SETTINGS frame is acknowledged, as h2spec's handshake does.
        """
        if settings is None:
            settings = {INITIAL_WINDOW_SIZE: 65535}
        self.send(PREFACE, SettingsFrame(0, settings=settings))
        acked = remote = False
        deadline = time.monotonic() + self.timeout
        while not (acked and remote):
            frame = self._next(deadline)
            if frame is None:
                raise AssertionError(f"handshake: the connection ended; {self.transcript()}")
            if isinstance(frame, SettingsFrame):
                if "ACK" in frame.flags:
                    acked = True
                else:
                    remote = True
                    self.server_settings.update(frame.settings)
                    self.send(SettingsFrame(0, flags=["ACK"]))

    # -- receiving -------------------------------------------------------------------------

    def _next(self, deadline: float) -> Frame | None:
        """The next frame; None once the server has closed. TimeoutError at the deadline."""
        while True:
            frame = self._parse()
            if frame is not None:
                self.received.append(frame)
                self._track(frame)
                return frame
            if self.closed:
                return None
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError
            self.sock.settimeout(remaining)
            try:
                data = self.sock.recv(65536)
            except TimeoutError:
                raise TimeoutError from None
            except (ConnectionError, ssl.SSLError):
                data = b""
            if not data:
                self.closed = True
            self._buffer += data

    def _parse(self) -> Frame | None:
        buffer = self._buffer
        if len(buffer) < 9:
            return None
        length = int.from_bytes(buffer[:3], "big")
        if len(buffer) < 9 + length:
            return None
        frame, _ = Frame.parse_frame_header(memoryview(bytes(buffer[:9])))
        frame.parse_body(memoryview(bytes(buffer[9 : 9 + length])))
        del buffer[: 9 + length]
        return frame

    def _track(self, frame: Frame) -> None:
        """Decode response header blocks (keeping the HPACK state) and collect bodies."""
        sid = frame.stream_id
        if isinstance(frame, (HeadersFrame, ContinuationFrame)):
            self._block.append(frame.data)
            if "END_HEADERS" in frame.flags:
                decoded = self.decoder.decode(b"".join(self._block), raw=True)
                fields = [(bytes(name), bytes(value)) for name, value in decoded]
                self._block = []
                response = self._responses.setdefault(sid, Response(sid))
                if response.headers and response.status >= 200:
                    response.trailers = fields  # a block after the final head
                else:
                    response.headers = fields
        if isinstance(frame, DataFrame):
            self._responses.setdefault(sid, Response(sid)).body += frame.data
        if isinstance(frame, (HeadersFrame, DataFrame)) and "END_STREAM" in frame.flags:
            self._responses.setdefault(sid, Response(sid)).ended = True

    def transcript(self) -> str:
        frames = ", ".join(describe(f) for f in self.received) or "no frames"
        return f"received: {frames}{'; then the connection closed' if self.closed else ''}"

    def wait_for(
        self, match: Callable[[Frame], bool], what: str, timeout: float | None = None
    ) -> Frame:
        """Read until a frame matches; fail if the connection ends or the deadline passes."""
        deadline = time.monotonic() + (timeout or self.timeout)
        while True:
            try:
                frame = self._next(deadline)
            except TimeoutError:
                raise AssertionError(f"expected {what}, timed out; {self.transcript()}") from None
            if frame is None:
                raise AssertionError(f"expected {what}, the connection closed; {self.transcript()}")
            if match(frame):
                return frame

    # -- h2spec's verdicts -------------------------------------------------------------------

    def expect_connection_error(self, *codes: int) -> None:
        """GOAWAY with one of ``codes``, or the connection closed."""
        names = "/".join(_code_name(c) for c in codes)
        deadline = time.monotonic() + self.timeout
        while True:
            try:
                frame = self._next(deadline)
            except TimeoutError:
                raise AssertionError(
                    f"expected connection error {names}, timed out; {self.transcript()}"
                ) from None
            if frame is None:
                return
            if isinstance(frame, GoAwayFrame):
                assert frame.error_code in codes, (
                    f"expected connection error {names}; {self.transcript()}"
                )
                return

    def expect_stream_error(self, stream_id: int, *codes: int) -> None:
        """RST_STREAM on ``stream_id`` with one of ``codes``; or GOAWAY with one; or close."""
        names = "/".join(_code_name(c) for c in codes)
        what = f"stream error {names} on stream {stream_id}"
        deadline = time.monotonic() + self.timeout
        while True:
            try:
                frame = self._next(deadline)
            except TimeoutError:
                raise AssertionError(f"expected {what}, timed out; {self.transcript()}") from None
            if frame is None:
                return
            if isinstance(frame, GoAwayFrame) or (
                isinstance(frame, RstStreamFrame) and frame.stream_id == stream_id
            ):
                assert frame.error_code in codes, f"expected {what}; {self.transcript()}"
                return

    def expect_closed(self) -> None:
        """The server closes the connection (whatever frames come first)."""
        deadline = time.monotonic() + self.timeout
        while True:
            try:
                frame = self._next(deadline)
            except TimeoutError:
                raise AssertionError(
                    f"expected the connection to close, timed out; {self.transcript()}"
                ) from None
            if frame is None:
                return

    def expect_closed_raw(self) -> bytes:
        """Bytes (not frames: the server may answer in HTTP/1.1) until the server closes."""
        deadline = time.monotonic() + self.timeout
        data = bytearray()
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"expected the connection to close; got {bytes(data)!r}")
            self.sock.settimeout(remaining)
            try:
                chunk = self.sock.recv(65536)
            except TimeoutError:
                continue
            except (ConnectionError, ssl.SSLError):
                chunk = b""
            if not chunk:
                self.closed = True
                return bytes(data)
            data += chunk

    def expect_headers(self, stream_id: int) -> Response:
        """A HEADERS frame on ``stream_id`` (h2spec's VerifyHeadersFrame)."""

        def match(frame: Frame) -> bool:
            if isinstance(frame, (RstStreamFrame, GoAwayFrame)) and frame.stream_id in (
                0,
                stream_id,
            ):
                raise AssertionError(f"expected HEADERS on stream {stream_id}; {self.transcript()}")
            return isinstance(frame, HeadersFrame) and frame.stream_id == stream_id

        self.wait_for(match, f"HEADERS on stream {stream_id}")
        return self._responses[stream_id]

    def expect_response(self, stream_id: int) -> Response:
        """The whole response on ``stream_id``: until END_STREAM (a reset fails)."""
        response = self._responses.get(stream_id)
        if response is None or response.status < 200:
            self.expect_headers(stream_id)
            response = self._responses[stream_id]
        while response.status < 200 and not response.ended:  # interim (1xx) responses
            self.expect_headers(stream_id)
        if not response.ended:

            def match(frame: Frame) -> bool:
                if isinstance(frame, (RstStreamFrame, GoAwayFrame)) and frame.stream_id in (
                    0,
                    stream_id,
                ):
                    raise AssertionError(
                        f"expected the end of stream {stream_id}; {self.transcript()}"
                    )
                return response.ended

            self.wait_for(match, f"the end of stream {stream_id}")
        return response

    def expect_ping_ack(self, data: bytes, *, forbidden: bytes | None = None) -> None:
        """A PING ACK echoing ``data``; a PING carrying ``forbidden`` before it fails."""

        def match(frame: Frame) -> bool:
            if not isinstance(frame, PingFrame):
                return False
            if forbidden is not None and bytes(frame.opaque_data) == forbidden:
                raise AssertionError(f"the server answered a PING ACK; {self.transcript()}")
            return "ACK" in frame.flags and bytes(frame.opaque_data) == data

        self.wait_for(match, f"PING ACK {data!r}")

    def expect_data(self, stream_id: int) -> DataFrame:
        """The next DATA frame on ``stream_id`` (h2spec's WaitEventByType(DATA))."""
        frame = self.wait_for(
            lambda f: isinstance(f, DataFrame) and f.stream_id == stream_id,
            f"DATA on stream {stream_id}",
        )
        assert isinstance(frame, DataFrame)
        return frame

    def expect_goaway(self) -> GoAwayFrame:
        """A GOAWAY frame, whatever comes before it (h2spec's WaitEventByType(GOAWAY))."""
        frame = self.wait_for(lambda f: isinstance(f, GoAwayFrame), "GOAWAY")
        assert isinstance(frame, GoAwayFrame)
        return frame

    def expect_rst_stream(self, stream_id: int) -> RstStreamFrame:
        """A RST_STREAM frame on ``stream_id``, whatever comes before it."""
        frame = self.wait_for(
            lambda f: isinstance(f, RstStreamFrame) and f.stream_id == stream_id,
            f"RST_STREAM on stream {stream_id}",
        )
        assert isinstance(frame, RstStreamFrame)
        return frame

    def expect_settings_ack(self) -> None:
        self.wait_for(lambda f: isinstance(f, SettingsFrame) and "ACK" in f.flags, "SETTINGS ACK")

    def window_update(self, stream_id: int, increment: int) -> bytes:
        """A WINDOW_UPDATE frame as bytes (any increment, 0 and 2^31-1 included)."""
        return raw_frame(WINDOW_UPDATE, 0, stream_id, increment.to_bytes(4, "big"))
