"""DATA framing across streams: incremental responses share the connection round-robin,
non-incremental ones go one at a time in request order (RFC 9218 §10), and a stream held
by its window never holds back the others. The scheduler itself: test_h2_priority.py."""

from __future__ import annotations

from h2.settings import SettingCodes
from hyperframe.frame import DataFrame, Frame

from .h2_helpers import GET, Pair

# RFC 9218 §4.2: an incremental response, at the default urgency.
INCREMENTAL = [*GET, ("priority", "i")]


def data_frames(out: bytes) -> list[tuple[int, int, bool]]:
    """(stream id, payload length, END_STREAM) of each DATA frame in ``out``."""
    result = []
    while out:
        frame, length = Frame.parse_frame_header(memoryview(out[:9]))
        frame.parse_body(memoryview(out[9 : 9 + length]))
        if isinstance(frame, DataFrame):
            result.append((frame.stream_id, len(frame.data), "END_STREAM" in frame.flags))
        out = out[9 + length :]
    return result


def open_windows(pair: Pair, size: int = 2**30) -> None:
    pair.client.update_settings({SettingCodes.INITIAL_WINDOW_SIZE: 2**31 - 1})
    pair.client.increment_flow_control_window(size)
    pair.exchange()


def test_small_response_is_not_starved_by_a_large_one() -> None:
    pair = Pair()
    open_windows(pair)
    big, small = pair.request(INCREMENTAL), pair.request(INCREMENTAL)
    pair.exchange()
    pair.respond(big, b"B" * 1_000_000)
    pair.respond(small, b"s" * 100)
    frames = data_frames(pair.server.data_to_send())
    # The small response goes out in the first round, right after one quantum of the big.
    assert frames[:2] == [(big, 16384, False), (small, 100, True)]
    assert sum(n for sid, n, _ in frames if sid == big) == 1_000_000


def test_round_robin_one_quantum_per_stream_per_round() -> None:
    pair = Pair()
    open_windows(pair)
    sids = [pair.request(INCREMENTAL) for _ in range(3)]
    pair.exchange()
    for sid in sids:
        pair.respond(sid, b"x" * 40_000)
    frames = data_frames(pair.server.data_to_send())
    order = [sid for sid, _, _ in frames]
    assert order == sids * 3
    assert [n for _, n, _ in frames] == [16384] * 6 + [40_000 - 2 * 16384] * 3


def test_streams_blocked_by_their_window_do_not_block_others() -> None:
    pair = Pair()
    pair.client.increment_flow_control_window(2**30)
    pair.exchange()
    blocked, free = pair.request(), pair.request()
    pair.exchange()
    pair.client.increment_flow_control_window(1_000_000, free)
    pair.exchange()
    pair.respond(blocked, b"b" * 100_000)
    pair.respond(free, b"f" * 100_000)
    frames = data_frames(pair.server.data_to_send())
    assert sum(n for sid, n, _ in frames if sid == blocked) == 65535
    assert sum(n for sid, n, _ in frames if sid == free) == 100_000
    assert pair.server.stream_buffered(blocked) == 100_000 - 65535


def test_data_queued_between_calls_joins_the_rotation() -> None:
    pair = Pair()
    open_windows(pair)
    first = pair.request(INCREMENTAL)
    pair.exchange()
    pair.server.send_response(first, "200 OK", [])
    pair.server.send_data(first, b"a" * 20_000)
    assert data_frames(pair.server.data_to_send()) == [(first, 16384, False), (first, 3616, False)]
    second = pair.request(INCREMENTAL)
    pair.exchange()
    pair.respond(second, b"b" * 10)
    pair.server.send_data(first, b"a" * 20_000, end_stream=True)
    frames = data_frames(pair.server.data_to_send())
    assert frames[:2] == [(second, 10, True), (first, 16384, False)]  # in order of arrival
    assert frames[-1] == (first, 3616, True)


def test_without_priorities_responses_go_one_at_a_time_in_request_order() -> None:
    # RFC 9218 §10: the defaults (u=3, not incremental) are served in stream-id order,
    # each whole, whatever order the application answers in.
    pair = Pair()
    open_windows(pair)
    first, second = pair.request(), pair.request()
    pair.exchange()
    pair.respond(second, b"s" * 40_000)
    pair.respond(first, b"f" * 40_000)
    order = [sid for sid, _, _ in data_frames(pair.server.data_to_send())]
    assert order == [first] * 3 + [second] * 3
