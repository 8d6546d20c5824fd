"""Flow control: upload backpressure through our windows, and respect for the client's."""

from __future__ import annotations

import h2.events
import pytest
from h2.settings import SettingCodes
from hyperframe.frame import GoAwayFrame, RstStreamFrame, WindowUpdateFrame

from preforkd.proto.events import Data, StreamReset
from preforkd.proto.h2 import ErrorCodes, H2ProtocolError, H2Settings

from .h2_helpers import Pair, RawClient, frame, of_type, post, response_body


def send_body(pair: Pair, sid: int, size: int) -> int:
    """Send up to ``size`` body bytes as the windows allow (without delivering them)."""
    sent = 0
    while sent < size:
        window = min(
            pair.client.local_flow_control_window(sid), pair.client.max_outbound_frame_size
        )
        chunk = min(window, size - sent)
        if chunk <= 0:
            break
        pair.client.send_data(sid, b"x" * chunk)
        sent += chunk
    return sent


def test_settings_and_connection_window_advertised() -> None:
    pair = Pair(handshake=False)
    events = pair.client.receive_data(pair.server.data_to_send())
    (changed,) = of_type(events, h2.events.RemoteSettingsChanged)
    values = {k: v.new_value for k, v in changed.changed_settings.items()}
    assert values == {
        SettingCodes.MAX_CONCURRENT_STREAMS: 100,
        SettingCodes.INITIAL_WINDOW_SIZE: 65535 * 4,
        SettingCodes.MAX_FRAME_SIZE: 16384,
        SettingCodes.MAX_HEADER_LIST_SIZE: 65536,
        0x9: 1,  # SETTINGS_NO_RFC7540_PRIORITIES (RFC 9218 §2.1)
    }
    (update,) = of_type(events, h2.events.WindowUpdated)
    assert (update.stream_id, update.delta) == (0, (1 << 20) - 65535)


def test_upload_window_reopens_only_as_the_app_reads() -> None:
    pair = Pair()
    sid = pair.request(post(), end_stream=False)
    sent = send_body(pair, sid, 10**6)
    assert sent == 65535 * 4  # the stream window, all of it
    events = pair.to_server()
    assert sum(len(e.data) for e in events if isinstance(e, Data)) == sent
    # Nothing read yet: no WINDOW_UPDATE, the client stays blocked.
    assert not of_type(pair.to_client(), h2.events.WindowUpdated)
    assert pair.client.local_flow_control_window(sid) == 0
    # The app reads half: the window reopens by that much.
    pair.server.acknowledge_received_data(sid, sent // 2)
    updates = of_type(pair.to_client(), h2.events.WindowUpdated)
    assert {u.stream_id for u in updates} == {sid}  # the connection has room left
    assert pair.client.local_flow_control_window(sid) == sent // 2


def test_connection_window_bounds_all_streams_together() -> None:
    pair = Pair()
    total = 0
    for _ in range(5):
        sid = pair.request(post(), end_stream=False)
        total += send_body(pair, sid, 65535 * 4)
    assert total == 1 << 20  # four full streams and a bit: the connection window
    pair.to_server()
    assert pair.client.outbound_flow_control_window == 0


def test_unread_body_is_credited_back_when_the_stream_is_finished() -> None:
    pair = Pair()
    sids = [pair.request(post(), end_stream=False) for _ in range(3)]
    sent = sum(send_body(pair, sid, 200_000) for sid in sids)
    for sid in sids:
        pair.client.end_stream(sid)
    pair.exchange()
    assert pair.client.outbound_flow_control_window == (1 << 20) - sent
    for sid in sids:
        pair.respond(sid)  # the app answered without reading the body
    pair.exchange()
    # h2 sends a connection WINDOW_UPDATE once half the window is free to give back.
    assert pair.client.outbound_flow_control_window == 1 << 20


def test_padding_is_credited_back_at_once() -> None:
    # RFC 9113 §6.1: padding counts against flow control; the app never sees it.
    raw = RawClient(H2Settings(initial_window_size=65535, connection_window_size=65535))
    raw.send(raw.headers(1, post(), end_stream=False))
    padded = frame(0, 0x8, 1, bytes([254]) + b"x" + b"\0" * 254)  # 256 flow-controlled bytes
    for _ in range(3 * 256):  # three windows' worth, far more than the 768 data bytes
        raw.send(padded)
    updates = [f for f in raw.frames() if isinstance(f, WindowUpdateFrame)]
    assert {f.stream_id for f in updates} == {0, 1}


def test_stream_window_overrun_is_a_flow_control_error() -> None:
    raw = RawClient()
    raw.send(raw.headers(1, post(), end_stream=False))
    chunk = frame(0, 0, 1, b"x" * 16384)
    with pytest.raises(H2ProtocolError) as info:
        for _ in range(17):  # 16 frames fill 262144 > 262140
            raw.send(chunk)
    assert info.value.error_code == ErrorCodes.FLOW_CONTROL_ERROR
    raw.received += raw.server.data_to_send()
    (goaway,) = of_type(raw.frames(), GoAwayFrame)
    assert goaway.error_code == ErrorCodes.FLOW_CONTROL_ERROR


def test_connection_window_overrun_is_a_flow_control_error() -> None:
    raw = RawClient(H2Settings(connection_window_size=65535))
    with pytest.raises(H2ProtocolError) as info:
        for sid in (1, 3, 5, 7, 9):
            raw.send(raw.headers(sid, post(), end_stream=False))
            raw.send(frame(0, 0, sid, b"x" * 16384))
    assert info.value.error_code == ErrorCodes.FLOW_CONTROL_ERROR


def test_window_update_overflowing_the_connection_window() -> None:
    raw = RawClient()
    with pytest.raises(H2ProtocolError) as info:
        raw.send(frame(8, 0, 0, (2**31 - 1).to_bytes(4)))
    assert info.value.error_code == ErrorCodes.FLOW_CONTROL_ERROR


def test_window_update_overflowing_a_stream_window_resets_it() -> None:
    raw = RawClient()
    raw.send(raw.headers(1, post(), end_stream=False))
    events = raw.send(frame(8, 0, 1, (2**31 - 1).to_bytes(4)))
    assert events == [StreamReset(1, ErrorCodes.FLOW_CONTROL_ERROR)]
    resets = [(f.stream_id, f.error_code) for f in raw.frames() if isinstance(f, RstStreamFrame)]
    assert resets == [(1, ErrorCodes.FLOW_CONTROL_ERROR)]


def test_window_update_reserved_bit_is_ignored() -> None:
    raw = RawClient()
    assert raw.send(frame(8, 0, 0, (0x80000000 | 100).to_bytes(4))) == []


def test_response_respects_a_one_byte_window() -> None:
    # h2spec 6.9.1/1: SETTINGS_INITIAL_WINDOW_SIZE of 1, then a request.
    pair = Pair()
    pair.client.update_settings({SettingCodes.INITIAL_WINDOW_SIZE: 1})
    sid = pair.request()
    pair.exchange()
    pair.respond(sid, b"hello")
    events = pair.to_client()
    assert response_body(events, sid) == b"h"
    assert pair.server.stream_buffered(sid) == 4
    pair.client.increment_flow_control_window(4, sid)
    _, events = pair.exchange()
    assert response_body(events, sid) == b"ello"
    assert of_type(events, h2.events.StreamEnded)
    assert pair.server.open_streams == 0


def test_window_made_negative_by_settings() -> None:
    # RFC 9113 §6.9.2 (h2spec 6.9.2/2): a window can go negative; sending resumes once it
    # is positive again.
    pair = Pair()
    pair.client.update_settings({SettingCodes.INITIAL_WINDOW_SIZE: 3})
    sid = pair.request()
    pair.exchange()
    pair.respond(sid, b"abcdef")
    assert response_body(pair.to_client(), sid) == b"abc"
    pair.client.update_settings({SettingCodes.INITIAL_WINDOW_SIZE: 1})  # window -> -2
    pair.client.increment_flow_control_window(3, sid)  # window -> 1
    _, events = pair.exchange()
    assert response_body(events, sid) == b"d"


def test_connection_window_of_the_client_is_respected() -> None:
    pair = Pair()
    sids = [pair.request() for _ in range(2)]
    pair.exchange()
    for sid in sids:
        pair.respond(sid, b"z" * 40_000)
    events = pair.to_client()
    assert sum(len(response_body(events, sid)) for sid in sids) == 65535
    assert sum(pair.server.stream_buffered(sid) for sid in sids) == 80_000 - 65535


def test_stream_buffered_counts_unframed_bytes() -> None:
    pair = Pair()
    sid = pair.request()
    pair.exchange()
    pair.server.send_response(sid, "200 OK", [])
    pair.server.send_data(sid, b"a" * 100_000)
    assert pair.server.stream_buffered(sid) == 100_000
    pair.to_client()
    assert pair.server.stream_buffered(sid) == 100_000 - 65535  # the client's stream window


def test_stalled_streams_reports_no_progress_for_timeout() -> None:
    pair = Pair()
    sid = pair.request()
    pair.exchange()
    pair.server.send_response(sid, "200 OK", [])
    pair.server.send_data(sid, b"a" * 200_000)
    pair.to_client()  # the window is used up; the client never reopens it
    assert pair.server.stalled_streams(0.0, 10.0) == []
    assert pair.server.stalled_streams(9.0, 10.0) == []
    assert pair.server.stalled_streams(10.0, 10.0) == [sid]
    # Progress restarts the clock.
    pair.client.acknowledge_received_data(65535, sid)
    pair.exchange()
    assert pair.server.stalled_streams(11.0, 10.0) == []
    assert pair.server.stalled_streams(20.0, 10.0) == []
    assert pair.server.stalled_streams(21.0, 10.0) == [sid]
    pair.server.reset_stream(sid, ErrorCodes.CANCEL)
    assert pair.server.open_streams == 0
    (reset,) = of_type(pair.to_client(), h2.events.StreamReset)
    assert reset.error_code == ErrorCodes.CANCEL


def test_acknowledging_too_much_or_too_late_is_harmless() -> None:
    pair = Pair()
    sid = pair.request(post(), b"abc")
    pair.to_server()
    pair.server.acknowledge_received_data(sid, 10**9)  # capped at the 3 bytes delivered
    pair.server.acknowledge_received_data(99, 10)  # unknown stream
    pair.respond(sid)
    pair.exchange()
    pair.server.acknowledge_received_data(sid, 3)  # the stream is over
    pair.exchange()
    assert pair.client.outbound_flow_control_window <= 1 << 20


def test_requests_flow_while_the_client_acknowledges() -> None:
    # A full round trip: a large upload and download on one stream.
    pair = Pair()
    sid = pair.request(post(), end_stream=False)
    received = 0
    total = 600_000
    sent = 0
    while received < total:
        sent += send_body(pair, sid, total - sent)
        for event in pair.to_server():
            if isinstance(event, Data):
                received += len(event.data)
                pair.server.acknowledge_received_data(sid, len(event.data))
        pair.to_client()
    assert received == total
