"""Protections: stream limits, rapid reset, CONTINUATION, PING, SETTINGS and empty-frame
floods, HPACK bombs, oversized frames."""

from __future__ import annotations

import pytest
from hpack import Encoder
from hyperframe.frame import GoAwayFrame, RstStreamFrame

from preforkd.proto.events import EndOfMessage, Request, StreamReset
from preforkd.proto.h2 import ErrorCodes, H2ProtocolError, H2Settings

from .h2_helpers import GET, RawClient, frame, of_type, post, settings_payload


def goaway_code(raw: RawClient) -> int:
    raw.received += raw.server.data_to_send()
    (goaway,) = of_type(raw.frames(), GoAwayFrame)
    return int(goaway.error_code)


def resets(raw: RawClient) -> list[tuple[int, int]]:
    return [(f.stream_id, f.error_code) for f in raw.frames() if isinstance(f, RstStreamFrame)]


# -- concurrency ----------------------------------------------------------------------------


def test_streams_beyond_the_limit_are_refused() -> None:
    # RFC 9113 §5.1.2 (h2spec 5.1.2): REFUSED_STREAM, not a connection error.
    raw = RawClient(H2Settings(max_concurrent_streams=2))
    events = raw.send(raw.headers(1) + raw.headers(3) + raw.headers(5))
    assert [e.stream_id for e in of_type(events, Request)] == [1, 3]
    assert resets(raw) == [(5, ErrorCodes.REFUSED_STREAM)]
    assert raw.server.open_streams == 2
    # A finished stream frees its slot.
    raw.server.send_response(1, "204 No Content", [], end_stream=True)
    assert [e.stream_id for e in of_type(raw.send(raw.headers(7)), Request)] == [7]


def test_a_stream_counts_until_its_response_is_sent() -> None:
    # h2spec 5.1.2: with a window of 0 the responses cannot leave, so the streams stay.
    raw = RawClient(H2Settings(max_concurrent_streams=3))
    raw.send(frame(4, 0, 0, settings_payload(initial_window_size=0)))
    for sid in (1, 3, 5):
        raw.send(raw.headers(sid))
        raw.server.send_response(sid, "200 OK", [])
        raw.server.send_data(sid, b"body", end_stream=True)  # the app is done
    raw.frames()
    assert raw.send(raw.headers(7)) == []
    assert resets(raw) == [(7, ErrorCodes.REFUSED_STREAM)]
    raw.send(frame(4, 0, 0, settings_payload(initial_window_size=100)))
    assert raw.server.open_streams == 0  # sent at last
    assert [type(e) for e in raw.send(raw.headers(9))] == [Request, EndOfMessage]


def test_a_reset_stream_counts_until_the_app_is_done() -> None:
    # CVE-2023-44487: a client reset does not free the slot while the app still runs.
    raw = RawClient(H2Settings(max_concurrent_streams=1))
    raw.send(raw.headers(1))
    events = raw.send(frame(3, 0, 1, (8).to_bytes(4)))
    assert events == [StreamReset(1, ErrorCodes.CANCEL)]
    assert raw.send(raw.headers(3)) == []
    assert resets(raw) == [(3, ErrorCodes.REFUSED_STREAM)]
    raw.server.reset_stream(1)  # the adapter finishes stream 1
    assert raw.server.open_streams == 0
    assert [type(e) for e in raw.send(raw.headers(5))] == [Request, EndOfMessage]


def test_stream_opened_and_reset_in_one_read() -> None:
    # Both events arrive together: the adapter may skip the application call altogether,
    # but must still finish the stream for its slot to free.
    raw = RawClient(H2Settings(max_concurrent_streams=1))
    events = raw.send(raw.headers(1, end_stream=False) + frame(3, 0, 1, (8).to_bytes(4)))
    assert [type(e) for e in events] == [Request, StreamReset]
    assert raw.server.open_streams == 1
    raw.server.reset_stream(1)
    assert raw.server.open_streams == 0


# -- rapid reset (CVE-2023-44487) -----------------------------------------------------------


def test_rapid_reset_is_answered_with_enhance_your_calm() -> None:
    raw = RawClient(H2Settings(max_resets=10))
    with pytest.raises(H2ProtocolError) as info:
        for sid in range(1, 40, 2):
            raw.send(raw.headers(sid, end_stream=False) + frame(3, 0, sid, (8).to_bytes(4)))
    assert info.value.error_code == ErrorCodes.ENHANCE_YOUR_CALM
    assert goaway_code(raw) == ErrorCodes.ENHANCE_YOUR_CALM


def test_resets_spread_over_time_are_fine() -> None:
    raw = RawClient(H2Settings(max_resets=10, flood_window=1.0))
    for sid in range(1, 80, 2):
        raw.now += 0.2  # five per window
        raw.send(raw.headers(sid, end_stream=False) + frame(3, 0, sid, (8).to_bytes(4)))


def test_refused_and_malformed_streams_count_as_resets() -> None:
    raw = RawClient(H2Settings(max_resets=5))
    with pytest.raises(H2ProtocolError) as info:
        for sid in range(1, 20, 2):
            raw.send(raw.headers(sid, [*GET, ("connection", "x")]))
    assert info.value.error_code == ErrorCodes.ENHANCE_YOUR_CALM


# -- floods ---------------------------------------------------------------------------------


def test_ping_flood() -> None:
    raw = RawClient(H2Settings(max_pings=50))
    ping = frame(6, 0, 0, bytes(8))
    raw.send(ping * 50)
    with pytest.raises(H2ProtocolError) as info:
        raw.send(ping)
    assert info.value.error_code == ErrorCodes.ENHANCE_YOUR_CALM
    assert goaway_code(raw) == ErrorCodes.ENHANCE_YOUR_CALM


def test_pings_in_a_new_window_are_fine() -> None:
    raw = RawClient(H2Settings(max_pings=50, flood_window=10.0))
    ping = frame(6, 0, 0, bytes(8))
    raw.send(ping * 50)
    raw.now = 10.0
    raw.send(ping * 50)


def test_settings_flood() -> None:
    raw = RawClient(H2Settings(max_settings=20))
    with pytest.raises(H2ProtocolError) as info:
        raw.send(frame(4, 0, 0) * 21)  # the preface's SETTINGS counted one already
    assert info.value.error_code == ErrorCodes.ENHANCE_YOUR_CALM


@pytest.mark.parametrize(
    "junk",
    [
        frame(2, 0, 1, (0).to_bytes(4) + b"\x10"),  # PRIORITY
        frame(0xBB, 0, 0, b"x"),  # an unknown extension frame
        frame(6, 1, 0, bytes(8)),  # a PING acknowledgement of nothing
    ],
    ids=["priority", "unknown", "unsolicited-ping-ack"],
)
def test_empty_frame_floods(junk: bytes) -> None:
    raw = RawClient(H2Settings(max_empty_frames=100))
    raw.send(junk * 100)
    with pytest.raises(H2ProtocolError) as info:
        raw.send(junk)
    assert info.value.error_code == ErrorCodes.ENHANCE_YOUR_CALM


def test_empty_data_frame_flood() -> None:
    # CVE-2019-9518.
    raw = RawClient(H2Settings(max_empty_frames=100))
    raw.send(raw.headers(1, post(), end_stream=False))
    with pytest.raises(H2ProtocolError) as info:
        raw.send(frame(0, 0, 1) * 101)
    assert info.value.error_code == ErrorCodes.ENHANCE_YOUR_CALM


# -- header blocks --------------------------------------------------------------------------


def test_continuation_flood_is_cut_off_at_the_byte_limit() -> None:
    # CVE-2024-27316: CONTINUATION frames without END_HEADERS, never buffered beyond the
    # limit (twice SETTINGS_MAX_HEADER_LIST_SIZE).
    raw = RawClient(H2Settings(max_header_list_size=4096))
    raw.send(frame(1, 0, 1, raw.block(GET)))
    filler = frame(9, 0, 1, b"\x40\x01a\x7f" + b"b" * 1000)
    with pytest.raises(H2ProtocolError) as info:
        for _ in range(9):
            raw.send(filler)
    assert info.value.error_code == ErrorCodes.ENHANCE_YOUR_CALM
    assert goaway_code(raw) == ErrorCodes.ENHANCE_YOUR_CALM


def test_an_unfinished_header_block_is_visible_to_the_adapter() -> None:
    raw = RawClient()
    block = raw.block(GET)
    raw.send(frame(1, 1, 1, block[:2]))
    assert raw.server.receiving_headers and raw.server.open_streams == 0
    raw.send(frame(9, 4, 1, block[2:]))
    assert not raw.server.receiving_headers and raw.server.open_streams == 1


def test_continuation_flood_of_empty_frames_is_cut_off() -> None:
    raw = RawClient()
    raw.send(frame(1, 0, 1, raw.block(GET)))
    with pytest.raises(H2ProtocolError) as info:
        raw.send(frame(9, 0, 1) * 64)
    assert info.value.error_code == ErrorCodes.ENHANCE_YOUR_CALM


def test_header_block_in_many_continuations_is_fine() -> None:
    # h2spec 6.10/1.
    raw = RawClient()
    block = raw.block([*GET, *[(f"x-{i}", "v" * 50) for i in range(40)]])
    pieces = [block[i : i + 100] for i in range(0, len(block), 100)]
    data = frame(1, 1, 1, pieces[0])
    data += b"".join(frame(9, 0, 1, p) for p in pieces[1:-1]) + frame(9, 4, 1, pieces[-1])
    events = raw.send(data)
    assert isinstance(events[0], Request) and len(events[0].headers) == 41


def test_hpack_bomb_is_refused() -> None:
    # A small block that decodes to a huge list: one large dynamic-table entry, indexed
    # many times (CVE-2016-6581). Decoding stops at twice the advertised limit.
    raw = RawClient(H2Settings(max_header_list_size=8192))
    encoder = Encoder()
    first = encoder.encode([*GET, ("x-big", "v" * 4000)])
    raw.send(frame(1, 5, 1, first))
    index = bytes([0x80 | 62])  # the x-big entry, now first in the dynamic table
    with pytest.raises(H2ProtocolError) as info:
        raw.send(frame(1, 5, 3, encoder.encode(GET) + index * 100))
    assert info.value.error_code == ErrorCodes.ENHANCE_YOUR_CALM


def test_header_list_over_the_advertised_limit_gets_431() -> None:
    raw = RawClient(H2Settings(max_header_list_size=8192))
    events = raw.send(raw.headers(1, [*GET, ("x-big", "v" * 9000)]))
    assert events == []
    assert raw.server.open_streams == 0


def test_frame_over_max_frame_size_is_refused_before_its_payload() -> None:
    # RFC 9113 §4.2 (h2spec 4.2/2-3): refused at the 9-byte header.
    raw = RawClient()
    raw.send(raw.headers(1, post(), end_stream=False))
    header = (16385).to_bytes(3) + bytes((0, 0)) + (1).to_bytes(4)
    with pytest.raises(H2ProtocolError) as info:
        raw.send(header)
    assert info.value.error_code == ErrorCodes.FRAME_SIZE_ERROR


def test_max_frame_size_of_16384_is_accepted() -> None:
    # h2spec 4.2/1.
    raw = RawClient()
    raw.send(raw.headers(1, post(16384), end_stream=False))
    events = raw.send(frame(0, 1, 1, b"x" * 16384))
    assert sum(len(e.data) for e in events if hasattr(e, "data")) == 16384
