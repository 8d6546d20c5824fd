"""Invalid frames and frame sequences, section by section of RFC 9113 and RFC 7541.

The cases follow the h2spec suite's: each expects a connection error (GOAWAY with a code),
a stream error (RST_STREAM with a code), or that the connection carries on.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
from hyperframe.frame import GoAwayFrame, PingFrame, RstStreamFrame, SettingsFrame

from preforkd.proto.events import EndOfMessage, Request
from preforkd.proto.h2 import ErrorCodes, H2ProtocolError

from .h2_helpers import GET, PREFACE, RawClient, frame, post, settings_payload

E = ErrorCodes
Step = Callable[[RawClient], bytes]


def outcome(raw: RawClient, steps: list[Step]) -> tuple[str, int | None]:
    """Send each step; return ("goaway", code), ("rst", code) or ("ok", None)."""
    raw.frames()
    try:
        for step in steps:
            data = step(raw)
            if data:
                raw.send(data)
            else:
                raw.received += raw.server.data_to_send()
    except H2ProtocolError as exc:
        raw.received += raw.server.data_to_send()
        goaways = [f for f in raw.frames() if isinstance(f, GoAwayFrame)]
        assert [g.error_code for g in goaways] == [exc.error_code]
        return "goaway", int(exc.error_code)
    rsts = [f.error_code for f in raw.frames() if isinstance(f, RstStreamFrame)]
    if rsts:
        return "rst", rsts[-1]
    # Still alive: a PING is answered.
    raw.send(frame(6, 0, 0, b"alive?!!"))
    assert any(isinstance(f, PingFrame) and "ACK" in f.flags for f in raw.frames())
    return "ok", None


def h(sid: int, end_stream: bool = True, headers: list[tuple[str, str]] | None = None) -> Step:
    return lambda raw: raw.headers(sid, headers or GET, end_stream=end_stream)


def f(kind: int, flags: int, sid: int, payload: bytes = b"") -> Step:
    return lambda raw: frame(kind, flags, sid, payload)


def block(kind: int, flags: int, sid: int, headers: list[tuple[str, str]] = GET) -> Step:
    return lambda raw: frame(kind, flags, sid, raw.block(headers))


def respond(sid: int) -> Step:
    def step(raw: RawClient) -> bytes:
        raw.server.send_response(sid, "200 OK", [], end_stream=True)
        return b""

    return step


RST_CANCEL = (8).to_bytes(4)
CASES: dict[str, tuple[list[Step], tuple[str, int | None]]] = {
    # §4.1 frame format
    "unknown frame type is ignored": ([f(0x20, 0, 0, b"xyz")], ("ok", None)),
    "undefined flags are ignored": ([f(6, 0x10, 0, bytes(8))], ("ok", None)),
    "reserved stream id bit is ignored": (
        [
            lambda raw: frame(1, 5, 0x7FFFFFFF, raw.block(GET)).replace(
                b"\x7f\xff\xff\xff", b"\x80\x00\x00\x01", 1
            )
        ],
        ("ok", None),
    ),
    # §4.3 header compression
    "invalid header block fragment": ([f(1, 5, 1, b"\x00\x01")], ("goaway", E.COMPRESSION_ERROR)),
    "PRIORITY inside a header block": (
        [block(1, 1, 1), f(2, 0, 1, bytes(5))],
        ("goaway", E.PROTOCOL_ERROR),
    ),
    "HEADERS of another stream inside a header block": (
        [block(1, 1, 1), block(1, 5, 3)],
        ("goaway", E.PROTOCOL_ERROR),
    ),
    # §5.1 idle
    "idle: DATA": ([f(0, 1, 1, b"test")], ("goaway", E.PROTOCOL_ERROR)),
    "idle: RST_STREAM": ([f(3, 0, 1, RST_CANCEL)], ("goaway", E.PROTOCOL_ERROR)),
    "idle: WINDOW_UPDATE": ([f(8, 0, 1, (100).to_bytes(4))], ("goaway", E.PROTOCOL_ERROR)),
    "idle: CONTINUATION": ([block(9, 4, 1)], ("goaway", E.PROTOCOL_ERROR)),
    "idle: PRIORITY is allowed": ([f(2, 0, 3, bytes(4) + b"\x10")], ("ok", None)),
    # §5.1 half-closed (remote)
    "half-closed: DATA": ([h(1), f(0, 1, 1, b"test")], ("rst", E.STREAM_CLOSED)),
    "half-closed: HEADERS": ([h(1), h(1)], ("rst", E.STREAM_CLOSED)),
    "half-closed: CONTINUATION": ([h(1), block(9, 4, 1)], ("goaway", E.PROTOCOL_ERROR)),
    "half-closed: WINDOW_UPDATE is allowed": ([h(1), f(8, 0, 1, (1).to_bytes(4))], ("ok", None)),
    "half-closed: PRIORITY is allowed": ([h(1), f(2, 0, 1, bytes(5))], ("ok", None)),
    # §5.1 closed
    "closed by RST_STREAM: DATA": (
        [h(1, False), f(3, 0, 1, RST_CANCEL), f(0, 1, 1, b"test")],
        ("rst", E.STREAM_CLOSED),
    ),
    "closed by RST_STREAM: HEADERS": (
        [h(1, False), f(3, 0, 1, RST_CANCEL), h(1)],
        ("rst", E.STREAM_CLOSED),
    ),
    "closed by RST_STREAM: CONTINUATION": (
        [h(1, False), f(3, 0, 1, RST_CANCEL), block(9, 4, 1)],
        ("goaway", E.PROTOCOL_ERROR),
    ),
    "closed: DATA": ([h(1), respond(1), f(0, 1, 1, b"test")], ("goaway", E.STREAM_CLOSED)),
    "closed: HEADERS": ([h(1), respond(1), h(1)], ("goaway", E.STREAM_CLOSED)),
    "closed: CONTINUATION": ([h(1), respond(1), block(9, 4, 1)], ("goaway", E.PROTOCOL_ERROR)),
    "closed: RST_STREAM is ignored": ([h(1), respond(1), f(3, 0, 1, RST_CANCEL)], ("ok", None)),
    "closed: WINDOW_UPDATE is ignored": (
        [h(1), respond(1), f(8, 0, 1, (9).to_bytes(4))],
        ("ok", None),
    ),
    # §5.1.1 stream identifiers
    "even stream id": ([h(2)], ("goaway", E.PROTOCOL_ERROR)),
    "decreasing stream id": ([h(5), h(3)], ("goaway", E.PROTOCOL_ERROR)),
    # §5.3.1 dependencies
    "HEADERS depending on itself": (
        [lambda raw: frame(1, 0x25, 1, (1).to_bytes(4) + b"\x10" + raw.block(GET))],
        ("rst", E.PROTOCOL_ERROR),
    ),
    "PRIORITY depending on itself": (
        [h(1, False), f(2, 0, 1, (1).to_bytes(4) + b"\x10")],
        ("rst", E.PROTOCOL_ERROR),
    ),
    "PRIORITY depending on itself, idle stream": (
        [f(2, 0, 3, (3).to_bytes(4) + b"\x10")],
        ("goaway", E.PROTOCOL_ERROR),
    ),
    # §5.5 extensions
    "unknown frame inside a header block": (
        [block(1, 1, 1), f(0x20, 0, 1, b"x")],
        ("goaway", E.PROTOCOL_ERROR),
    ),
    # §6.1 DATA
    "DATA on stream 0": ([f(0, 1, 0, b"test")], ("goaway", E.PROTOCOL_ERROR)),
    "DATA with too much padding": (
        [h(1, False, post()), f(0, 0x9, 1, b"\x06test")],
        ("goaway", E.PROTOCOL_ERROR),
    ),
    "DATA with padding": ([h(1, False, post()), f(0, 0x9, 1, b"\x02ab\0\0")], ("ok", None)),
    # §6.2 HEADERS
    "HEADERS on stream 0": ([block(1, 5, 0)], ("goaway", E.PROTOCOL_ERROR)),
    "HEADERS with too much padding": (
        [lambda raw: frame(1, 0xD, 1, b"\xff" + raw.block(GET))],
        ("goaway", E.PROTOCOL_ERROR),
    ),
    "HEADERS with padding and priority": (
        [lambda raw: frame(1, 0x2D, 1, b"\x02" + bytes(4) + b"\x10" + raw.block(GET) + b"\0\0")],
        ("ok", None),
    ),
    # §6.3 PRIORITY
    "PRIORITY on stream 0": ([f(2, 0, 0, bytes(5))], ("goaway", E.PROTOCOL_ERROR)),
    "PRIORITY of 4 bytes on an open stream": (
        [h(1, False), f(2, 0, 1, bytes(4))],
        ("rst", E.FRAME_SIZE_ERROR),
    ),
    "PRIORITY of 6 bytes on an idle stream": (
        [f(2, 0, 1, bytes(6))],
        ("goaway", E.FRAME_SIZE_ERROR),
    ),
    # §6.4 RST_STREAM
    "RST_STREAM on stream 0": ([f(3, 0, 0, RST_CANCEL)], ("goaway", E.PROTOCOL_ERROR)),
    "RST_STREAM of 3 bytes": ([h(1, False), f(3, 0, 1, bytes(3))], ("goaway", E.FRAME_SIZE_ERROR)),
    "RST_STREAM with an unknown code": (
        [h(1, False), f(3, 0, 1, (0xFF).to_bytes(4))],
        ("ok", None),
    ),
    # §6.5 SETTINGS
    "SETTINGS ACK with a payload": ([f(4, 1, 0, bytes(6))], ("goaway", E.FRAME_SIZE_ERROR)),
    "SETTINGS on a stream": ([f(4, 0, 1)], ("goaway", E.PROTOCOL_ERROR)),
    "SETTINGS of 3 bytes": ([f(4, 0, 0, bytes(3))], ("goaway", E.FRAME_SIZE_ERROR)),
    "SETTINGS_ENABLE_PUSH of 2": (
        [f(4, 0, 0, settings_payload(enable_push=2))],
        ("goaway", E.PROTOCOL_ERROR),
    ),
    "SETTINGS_INITIAL_WINDOW_SIZE too large": (
        [f(4, 0, 0, settings_payload(initial_window_size=2**31))],
        ("goaway", E.FLOW_CONTROL_ERROR),
    ),
    "SETTINGS_MAX_FRAME_SIZE too small": (
        [f(4, 0, 0, settings_payload(max_frame_size=16383))],
        ("goaway", E.PROTOCOL_ERROR),
    ),
    "SETTINGS_MAX_FRAME_SIZE too large": (
        [f(4, 0, 0, settings_payload(max_frame_size=2**24))],
        ("goaway", E.PROTOCOL_ERROR),
    ),
    "unknown setting is ignored": ([f(4, 0, 0, b"\x00\xff" + bytes(4))], ("ok", None)),
    # §6.7 PING
    "PING on a stream": ([f(6, 0, 1, bytes(8))], ("goaway", E.PROTOCOL_ERROR)),
    "PING of 6 bytes": ([f(6, 0, 0, bytes(6))], ("goaway", E.FRAME_SIZE_ERROR)),
    # §6.9 WINDOW_UPDATE
    "WINDOW_UPDATE of 0 on the connection": ([f(8, 0, 0, bytes(4))], ("goaway", E.PROTOCOL_ERROR)),
    "WINDOW_UPDATE of 0 on a stream": (
        [h(1, False), f(8, 0, 1, bytes(4))],
        ("rst", E.PROTOCOL_ERROR),
    ),
    "WINDOW_UPDATE of 3 bytes": ([f(8, 0, 0, bytes(3))], ("goaway", E.FRAME_SIZE_ERROR)),
    # §6.10 CONTINUATION
    "CONTINUATION followed by DATA": (
        [block(1, 1, 1), f(0, 1, 1, b"x")],
        ("goaway", E.PROTOCOL_ERROR),
    ),
    "CONTINUATION on stream 0": ([block(1, 1, 1), block(9, 4, 0)], ("goaway", E.PROTOCOL_ERROR)),
    "CONTINUATION after END_HEADERS": ([h(1), block(9, 4, 1)], ("goaway", E.PROTOCOL_ERROR)),
    "CONTINUATION after DATA": (
        [h(1, False, post()), f(0, 0, 1, b"x"), block(9, 4, 1)],
        ("goaway", E.PROTOCOL_ERROR),
    ),
    "PUSH_PROMISE from a client": ([f(5, 4, 1, bytes(4))], ("goaway", E.PROTOCOL_ERROR)),
    # RFC 7541 (h2spec hpack)
    "index 0": ([f(1, 5, 1, b"\x80")], ("goaway", E.COMPRESSION_ERROR)),
    "index past the tables": ([f(1, 5, 1, b"\xff\x7f")], ("goaway", E.COMPRESSION_ERROR)),
    "table size update after a field": (
        [f(1, 5, 1, b"\x82\x86\x84\x41\x01a\x3f\xe1\x1f")],
        ("goaway", E.COMPRESSION_ERROR),
    ),
    "table size update above SETTINGS_HEADER_TABLE_SIZE": (
        [f(1, 5, 1, b"\x3f\xe2\x1f\x82\x86\x84\x41\x01a")],
        ("goaway", E.COMPRESSION_ERROR),
    ),
    "table size updates at the start": (
        [f(1, 5, 1, b"\x20\x3f\xe1\x1f\x82\x86\x84\x41\x01a")],
        ("ok", None),
    ),
    "huffman string with EOS": (
        [f(1, 5, 1, b"\x82\x86\x84\x41\x84\xff\xff\xff\xff")],
        ("goaway", E.COMPRESSION_ERROR),
    ),
    "huffman padding that is not the EOS prefix": (
        [f(1, 5, 1, b"\x82\x86\x84\x41\x81\x00")],
        ("goaway", E.COMPRESSION_ERROR),
    ),
    "huffman padding longer than 7 bits": (
        [f(1, 5, 1, b"\x82\x86\x84\x41\x82\x1f\xff")],
        ("goaway", E.COMPRESSION_ERROR),
    ),
}


@pytest.mark.parametrize(("steps", "expected"), CASES.values(), ids=CASES.keys())
def test_invalid_frame_sequences(steps: list[Step], expected: tuple[str, int | None]) -> None:
    assert outcome(RawClient(), steps) == expected


def test_invalid_preface() -> None:
    raw = RawClient(handshake=False)
    with pytest.raises(H2ProtocolError) as info:
        raw.send(b"GET / HTTP/1.1\r\n\r\n")
    assert info.value.error_code == E.PROTOCOL_ERROR


def test_preface_must_be_followed_by_settings() -> None:
    raw = RawClient(handshake=False)
    with pytest.raises(H2ProtocolError):
        raw.send(PREFACE + frame(6, 0, 0, bytes(8)))


def test_settings_are_acknowledged() -> None:
    raw = RawClient(handshake=False)
    raw.send(PREFACE + frame(4, 0, 0, settings_payload(initial_window_size=100)))
    kinds = [
        (type(fr).__name__, "ACK" in fr.flags)
        for fr in raw.frames()
        if isinstance(fr, SettingsFrame)
    ]
    assert kinds == [("SettingsFrame", False), ("SettingsFrame", True)]


def test_priority_on_idle_stream_then_a_lower_stream() -> None:
    # h2spec generic 3.3/5: PRIORITY does not open a stream.
    raw = RawClient()
    raw.send(frame(2, 0, 5, bytes(4) + b"\x10"))
    assert [type(e) for e in raw.send(raw.headers(3))] == [Request, EndOfMessage]


def test_reset_with_unknown_code_is_reported_as_is() -> None:
    raw = RawClient()
    raw.send(raw.headers(1, end_stream=False))
    (reset,) = raw.send(frame(3, 0, 1, (0xFF).to_bytes(4)))
    assert reset.error_code == 0xFF  # type: ignore[union-attr]
