"""RFC 9218 extensible priorities: the signals, PRIORITY_UPDATE, and the DATA scheduler.

Pure pieces first (preforkd/proto/h2/priority.py), then the core in memory: the order of
DATA frames on the wire follows urgency, request order and the incremental round-robin.
"""

from __future__ import annotations

import random

import pytest
from h2.settings import SettingCodes
from hypothesis import given, settings
from hypothesis import strategies as st

from preforkd.proto.h2 import (
    UPGRADE_RESPONSE,
    ErrorCodes,
    H2Connection,
    H2ProtocolError,
    H2Settings,
)
from preforkd.proto.h2 import priority as priority_module
from preforkd.proto.h2.priority import (
    DEFAULT_PRIORITY,
    Priority,
    PriorityScheduler,
    parse_priority,
    parse_priority_update,
    request_priority,
)

from .h2_helpers import EXAMPLES, GET, Pair, RawClient, frame
from .test_h2_fairness import data_frames, open_windows
from .test_h2_invalid_frames import Step, f, h, outcome
from .test_h2_upgrade import client as upgrade_client
from .test_h2_upgrade import upgrade_request

E = ErrorCodes
PRIORITY_UPDATE = 0x10


def update_frame(sid: int, value: bytes, *, on_stream: int = 0) -> bytes:
    """A PRIORITY_UPDATE frame (RFC 9218 §7.1) for stream ``sid``."""
    return frame(PRIORITY_UPDATE, 0, on_stream, sid.to_bytes(4) + value)


def with_priority(*values: str) -> list[tuple[str, str]]:
    return [*GET, *(("priority", value) for value in values)]


# -- the Priority field (RFC 9218 §4, §5) ---------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("u=0", Priority(0, False)),
        ("u=7", Priority(7, False)),
        ("u=5, i", Priority(5, True)),
        ("i", Priority(3, True)),
        ("i=?1, u=1", Priority(1, True)),
        ("i=?0", DEFAULT_PRIORITY),
        ("", DEFAULT_PRIORITY),
        # §4: unknown parameters, out-of-range values and values of other types are ignored.
        ("u=2, foo=bar, x, y=(1 2)", Priority(2, False)),
        ("u=2;p=1", Priority(2, False)),  # parameters on a member are not its value
        ("u=8, i", Priority(3, True)),
        ("u=-1", DEFAULT_PRIORITY),
        ("u=1.0", DEFAULT_PRIORITY),  # a decimal, not an integer
        ("u", DEFAULT_PRIORITY),  # Boolean true is not an urgency
        ("u=?1", DEFAULT_PRIORITY),
        ('u="1"', DEFAULT_PRIORITY),
        ("u=(1)", DEFAULT_PRIORITY),
        ("i=1", DEFAULT_PRIORITY),  # an integer, not a Boolean
        ("i=tok", DEFAULT_PRIORITY),
        ("u=1, u=6", Priority(6, False)),  # RFC 8941 §4.2.2: the last one wins
    ],
)
def test_priority_field_values(value: str, expected: Priority) -> None:
    assert parse_priority(value.encode()) == expected
    assert request_priority(value.encode()) == expected


@pytest.mark.parametrize("value", [b"u=1,", b"u=1 i", b"U=1", b"u=0\xff", b"u=1;"])
def test_a_field_that_does_not_parse_is_ignored(value: bytes) -> None:
    assert parse_priority(value) is None
    assert request_priority(value) == DEFAULT_PRIORITY  # RFC 9218 §4, RFC 8941 §4.2


def test_parsed_values_are_remembered_within_a_bound() -> None:
    for n in range(300):
        assert parse_priority(f"u={n % 8}, x={n}".encode()) == Priority(n % 8)
    assert 0 < len(priority_module._memo) <= priority_module._MEMO_SIZE
    assert parse_priority("u=1,") is None
    assert parse_priority("u=1,") is None  # a failure is remembered too


def test_no_field_means_the_defaults() -> None:
    assert request_priority(None) == Priority(urgency=3, incremental=False)


def test_priority_rejects_an_urgency_out_of_range() -> None:
    with pytest.raises(ValueError):
        Priority(8)


# -- the PRIORITY_UPDATE frame (RFC 9218 §7.1) ------------------------------------------------


def test_priority_update_payload() -> None:
    assert parse_priority_update(0, (5).to_bytes(4) + b"u=1") == (5, b"u=1")
    assert parse_priority_update(0, (5).to_bytes(4)) == (5, b"")
    # The reserved bit is ignored.
    assert parse_priority_update(0, (0x80000007).to_bytes(4) + b"i") == (7, b"i")


@pytest.mark.parametrize(
    ("stream_id", "payload", "code"),
    [
        (1, (3).to_bytes(4) + b"u=1", E.PROTOCOL_ERROR),  # not on stream 0
        (0, (0).to_bytes(4) + b"u=1", E.PROTOCOL_ERROR),  # prioritized stream 0
        (0, (0x80000000).to_bytes(4), E.PROTOCOL_ERROR),  # 0 with the reserved bit
        (0, (2).to_bytes(4) + b"u=1", E.PROTOCOL_ERROR),  # a push stream never promised
        (0, b"\x00\x00\x01", E.FRAME_SIZE_ERROR),  # too short for the stream id
    ],
)
def test_priority_update_errors(stream_id: int, payload: bytes, code: int) -> None:
    with pytest.raises(H2ProtocolError) as info:
        parse_priority_update(stream_id, payload)
    assert info.value.error_code == code


# -- the scheduler alone -----------------------------------------------------------------------


def scheduler(*opened: tuple[int, str | None]) -> PriorityScheduler:
    s = PriorityScheduler(max_streams=10)
    for sid, value in opened:
        s.open(sid, value.encode() if value is not None else None)
    return s


def test_lower_urgency_first_then_request_order() -> None:
    s = scheduler((1, "u=7"), (3, None), (5, "u=0"), (7, "u=3"), (9, "u=0"))
    assert list(s.order([1, 3, 5, 7, 9])) == [5, 9, 3, 7, 1]
    # The ready order does not matter to non-incremental streams: stream id does.
    assert list(s.order([9, 7, 5, 3, 1])) == [5, 9, 3, 7, 1]


def test_default_priorities_are_served_in_stream_id_order() -> None:
    s = scheduler((1, None), (3, None), (5, None))
    assert list(s.order([5, 1, 3])) == [1, 3, 5]


def test_incremental_streams_rotate_by_recency() -> None:
    s = scheduler((1, "i"), (3, "i"), (5, "i"), (7, "u=4"))
    # ``ready`` lists the least recently served first: that is the rotation.
    assert list(s.order([3, 5, 1, 7])) == [3, 5, 1, 7]
    assert list(s.order([5, 1, 3, 7])) == [5, 1, 3, 7]


def test_non_incremental_streams_take_one_turn_among_incremental_ones() -> None:
    # RFC 9218 §10 asks to avoid starving either kind at one urgency: the non-incremental
    # ones (in id order) share one turn of the rotation.
    s = scheduler((1, None), (3, "i"), (5, "i"), (7, None))
    # The group's turn is that of its most recently served member.
    assert list(s.order([3, 5, 7, 1])) == [3, 5, 1, 7]
    assert list(s.order([5, 1, 7, 3])) == [5, 1, 7, 3]
    assert list(s.order([7, 1, 3, 5])) == [1, 7, 3, 5]


def test_update_reorders_an_open_stream() -> None:
    s = scheduler((1, None), (3, None))
    s.update(3, b"u=0")
    assert s.priority(3) == Priority(0)
    assert list(s.order([1, 3])) == [3, 1]
    s.update(3, b"u=0,")  # does not parse: ignored (RFC 9218 §7 allows that)
    assert s.priority(3) == Priority(0)
    s.update(3, b"")  # §7: a full set of parameters; absent ones take their defaults
    assert s.priority(3) == DEFAULT_PRIORITY


def test_update_before_the_request_wins_over_its_field() -> None:
    s = scheduler((1, None))
    s.update(5, b"u=1")
    s.update(5, b"u=2, i")  # only the latest is kept (§7)
    s.open(5, b"u=6")
    assert s.priority(5) == Priority(2, True)
    s.open(7, b"u=6")
    assert s.priority(7) == Priority(6)


def test_updates_for_skipped_streams_are_forgotten() -> None:
    s = PriorityScheduler(max_streams=3)
    s.update(3, b"u=1")
    s.update(5, b"u=1")
    s.open(7, None)  # RFC 9113 §5.1.1: streams 3 and 5 can never open now
    s.open(9, None)
    s.update(11, b"u=1")  # room again: 2 open + 1 idle
    assert s.priority(7) == DEFAULT_PRIORITY


def test_idle_updates_are_bounded_by_the_stream_limit() -> None:
    # RFC 9218 §7.1: idle streams prioritized plus open ones must not exceed
    # SETTINGS_MAX_CONCURRENT_STREAMS; beyond is a connection error PROTOCOL_ERROR.
    s = PriorityScheduler(max_streams=3)
    s.open(1, None)
    s.update(3, b"u=1")
    s.update(5, b"u=1")
    s.update(5, b"u=2")  # the same idle stream again takes no more room
    with pytest.raises(H2ProtocolError) as info:
        s.update(7, b"u=1")
    assert info.value.error_code == E.PROTOCOL_ERROR
    s.close(5)  # refused, say: its update is forgotten, and its room is free
    s.update(7, b"u=1")


def test_a_stream_keeps_its_turn_unless_incremental_ones_share_its_urgency() -> None:
    s = scheduler((1, None), (3, "u=1"), (5, "u=1, i"), (7, "u=2"))
    assert s.keeps_turn(1) and s.keeps_turn(7)  # only stream ids order their rivals
    assert not s.keeps_turn(3)  # it takes turns with stream 5
    assert not s.keeps_turn(5)  # incremental: round-robin
    s.update(5, b"u=4, i")
    assert s.keeps_turn(3)
    s.close(5)
    s.update(3, b"i")
    assert not s.keeps_turn(1) and not s.keeps_turn(3) and s.keeps_turn(7)


def test_close_forgets_the_stream() -> None:
    s = scheduler((1, "u=0"), (3, None))
    s.close(1)
    assert s.priority(1) == DEFAULT_PRIORITY
    assert list(s.order([3])) == [3]


@given(
    st.lists(st.tuples(st.integers(0, 7), st.booleans()), min_size=1, max_size=12),
    st.randoms(use_true_random=False),
)
def test_order_is_a_permutation_sorted_by_urgency(
    priorities: list[tuple[int, bool]], rnd: random.Random
) -> None:
    s = PriorityScheduler(max_streams=100)
    sids = [2 * n + 1 for n in range(len(priorities))]
    for sid, (u, i) in zip(sids, priorities, strict=True):
        s.open(sid, f"u={u}, i={'?1' if i else '?0'}".encode())
    ready = list(sids)
    rnd.shuffle(ready)
    order = list(s.order(ready))
    assert sorted(order) == sorted(ready)
    urgencies = [s.priority(sid).urgency for sid in order]
    assert urgencies == sorted(urgencies)
    for u in set(urgencies):
        plain = [sid for sid in order if s.priority(sid) == Priority(u, False)]
        assert plain == sorted(plain)  # non-incremental: request order
        incremental = [sid for sid in order if s.priority(sid) == Priority(u, True)]
        assert incremental == [sid for sid in ready if sid in incremental]  # rotation
    # keeps_turn: served once more (so moved to the back), the first stays first and the
    # order is the same, which is what lets the connection skip asking again.
    first = order[0]
    if s.keeps_turn(first):
        assert list(s.order([sid for sid in ready if sid != first] + [first])) == order


# -- the core: SETTINGS, the field, PRIORITY_UPDATE on the wire ------------------------------


def test_settings_say_rfc7540_priorities_are_not_used() -> None:
    pair = Pair()
    assert pair.client.remote_settings[0x9] == 1  # RFC 9218 §2.1
    assert pair.client.remote_settings[SettingCodes.MAX_CONCURRENT_STREAMS] == 100


def test_urgent_response_requested_later_goes_first() -> None:
    pair = Pair()
    open_windows(pair)
    background = pair.request(with_priority("u=7"))
    urgent = pair.request(with_priority("u=0"))
    pair.exchange()
    pair.respond(background, b"b" * 100_000)
    pair.respond(urgent, b"u" * 40_000)
    frames = data_frames(pair.server.data_to_send())
    assert [sid for sid, _, _ in frames[:3]] == [urgent] * 3
    assert frames[2] == (urgent, 40_000 - 2 * 16384, True)
    assert {sid for sid, _, _ in frames[3:]} == {background}


def test_urgent_response_overtakes_a_download_held_by_the_window() -> None:
    # The connection window is shut after the first 64 KiB of a u=7 download; the u=0
    # response asked for afterwards gets the window as soon as it reopens.
    pair = Pair()
    background = pair.request(with_priority("u=7"))
    pair.exchange()
    pair.client.increment_flow_control_window(2**20, background)
    pair.exchange()
    pair.respond(background, b"b" * 200_000)
    sent = sum(n for _, n, _ in data_frames(pair.server.data_to_send()))
    assert sent == 65535  # the connection window
    urgent = pair.request(with_priority("u=0"))
    pair.exchange()
    pair.respond(urgent, b"u" * 30_000)
    pair.client.increment_flow_control_window(30_000)
    pair.to_server()
    frames = data_frames(pair.server.data_to_send())
    assert frames == [(urgent, 16384, False), (urgent, 30_000 - 16384, True)]


def test_a_more_urgent_stream_held_by_its_window_lets_others_send() -> None:
    pair = Pair()
    pair.client.increment_flow_control_window(2**20)
    pair.exchange()
    urgent = pair.request(with_priority("u=0"))
    other = pair.request(with_priority("u=6"))
    pair.exchange()
    pair.respond(urgent, b"u" * 100_000)  # its stream window: 65,535
    pair.respond(other, b"o" * 10_000)
    frames = data_frames(pair.server.data_to_send())
    assert sum(n for sid, n, _ in frames if sid == urgent) == 65535
    assert frames[-1] == (other, 10_000, True)
    assert [sid for sid, _, _ in frames[:4]] == [urgent] * 4  # urgent first, while it can


def test_several_priority_field_lines_are_one_field() -> None:
    # RFC 9110 §5.3: "u=7" and "i" on two lines are "u=7, i".
    pair = Pair()
    open_windows(pair)
    first = pair.request()
    second = pair.request(with_priority("u=7", "i"))
    third = pair.request(with_priority("u=7", "i"))
    pair.exchange()
    for sid in (second, third, first):
        pair.respond(sid, b"x" * 40_000)
    order = [sid for sid, _, _ in data_frames(pair.server.data_to_send())]
    assert order == [first] * 3 + [second, third] * 3


def test_priority_update_reprioritizes_an_open_stream() -> None:
    pair = Pair()
    open_windows(pair)
    first, second = pair.request(), pair.request()
    pair.exchange()
    pair.to_server(update_frame(second, b"u=0"))
    pair.respond(first, b"f" * 40_000)
    pair.respond(second, b"s" * 40_000)
    order = [sid for sid, _, _ in data_frames(pair.server.data_to_send())]
    assert order == [second] * 3 + [first] * 3


def test_priority_update_before_the_request_applies_when_it_opens() -> None:
    pair = Pair()
    open_windows(pair)
    first = pair.request()
    pair.to_server()
    second = pair.client.get_next_available_stream_id()
    pair.to_server(update_frame(second, b"u=1"))  # sent ahead of the request (RFC 9218 §7)
    pair.request(with_priority("u=6"))  # the update, received last, wins
    pair.exchange()
    pair.respond(first, b"f" * 40_000)
    pair.respond(second, b"s" * 40_000)
    order = [sid for sid, _, _ in data_frames(pair.server.data_to_send())]
    assert order == [second] * 3 + [first] * 3


def test_priority_update_for_a_closed_stream_is_ignored() -> None:
    pair = Pair()
    sid = pair.request()
    pair.exchange()
    pair.respond(sid)
    pair.exchange()
    assert pair.to_server(update_frame(sid, b"u=0")) == []
    assert not pair.server.closed


UPDATE_CASES: dict[str, tuple[list[Step], tuple[str, int | None]]] = {
    "on an open stream": ([h(1, False), f(0x10, 0, 0, (1).to_bytes(4) + b"u=0")], ("ok", None)),
    "for an idle stream": ([f(0x10, 0, 0, (9).to_bytes(4) + b"u=0")], ("ok", None)),
    "with a value that does not parse": ([f(0x10, 0, 0, (1).to_bytes(4) + b"u=")], ("ok", None)),
    "sent on a stream": (
        [h(1, False), f(0x10, 0, 1, (1).to_bytes(4) + b"u=0")],
        ("goaway", E.PROTOCOL_ERROR),
    ),
    "for stream 0": ([f(0x10, 0, 0, (0).to_bytes(4) + b"u=0")], ("goaway", E.PROTOCOL_ERROR)),
    "for a push stream": ([f(0x10, 0, 0, (2).to_bytes(4))], ("goaway", E.PROTOCOL_ERROR)),
    "too short": ([f(0x10, 0, 0, b"\x00\x01")], ("goaway", E.FRAME_SIZE_ERROR)),
}


@pytest.mark.parametrize(("steps", "expected"), UPDATE_CASES.values(), ids=UPDATE_CASES.keys())
def test_priority_update_frames(steps: list[Step], expected: tuple[str, int | None]) -> None:
    assert outcome(RawClient(), steps) == expected


def test_too_many_idle_streams_prioritized_is_a_connection_error() -> None:
    raw = RawClient(H2Settings(max_concurrent_streams=2))
    raw.send(raw.headers(1, end_stream=False))
    raw.send(update_frame(3, b"u=1"))
    raw.send(update_frame(3, b"u=2"))
    with pytest.raises(H2ProtocolError) as info:
        raw.send(update_frame(5, b"u=1"))
    assert info.value.error_code == E.PROTOCOL_ERROR  # RFC 9218 §7.1


def test_streams_reset_while_their_application_runs_are_not_counted() -> None:
    # §7.1 counts the streams open on the wire; a reset one is closed there, even while
    # the server still counts it against its limit until the application returns.
    raw = RawClient(H2Settings(max_concurrent_streams=2))
    raw.send(raw.headers(1, end_stream=False))
    raw.send(frame(3, 0, 1, int(E.CANCEL).to_bytes(4)))  # RST_STREAM; the app runs on
    assert raw.server.open_streams == 1
    raw.send(update_frame(1, b"u=1"))  # for the reset stream: dropped, not kept as idle
    raw.send(update_frame(3, b"u=1"))
    raw.send(update_frame(5, b"u=1"))
    assert not raw.server.closed


def test_an_update_kept_for_a_refused_stream_is_forgotten() -> None:
    raw = RawClient(H2Settings(max_concurrent_streams=2))
    raw.send(raw.headers(1, end_stream=False))
    raw.send(update_frame(3, b"u=1"))  # 1 open + 1 idle prioritized: the limit
    malformed = [(":method", "GET"), (":scheme", "https"), (":authority", "a")]  # no :path
    raw.send(raw.headers(3, malformed))  # refused with RST_STREAM(PROTOCOL_ERROR)
    raw.send(update_frame(5, b"u=1"))  # room again: stream 3's update is gone
    assert not raw.server.closed


def test_a_stream_waiting_for_urgent_ones_is_not_stalled() -> None:
    # --send-timeout resets streams whose client keeps a window shut; one that only waits
    # its turn behind a more urgent download must not be taken for one.
    pair = Pair()
    pair.client.update_settings({SettingCodes.INITIAL_WINDOW_SIZE: 2**24})
    pair.exchange()
    urgent = pair.request(with_priority("u=0"))
    waiting = pair.request(with_priority("u=7"))
    pair.exchange()
    pair.server.send_response(urgent, "200 OK", [])
    pair.server.send_data(urgent, b"u" * 100_000)
    pair.respond(waiting, b"w" * 1000)
    pair.to_client()  # the connection window (64 KiB) is used up by the urgent stream
    now = 0.0
    for _ in range(20):
        assert pair.server.stalled_streams(now, 10.0) == []
        # The client reads on; the urgent download always has more than the window.
        pair.client.increment_flow_control_window(50_000)
        pair.server.send_data(urgent, b"u" * 50_000)
        pair.exchange()
        now += 1.0
    assert pair.server.stream_buffered(waiting) == 1000  # still waiting, 20 s on
    # Once the client stops opening the connection window, both are stalled.
    assert pair.server.stalled_streams(now, 10.0) == []
    assert sorted(pair.server.stalled_streams(now + 10, 10.0)) == [urgent, waiting]


# -- property: the wire follows the priorities, whatever they are ------------------------------


@settings(max_examples=EXAMPLES // 4, deadline=None)
@given(
    st.lists(
        st.tuples(st.integers(0, 7), st.booleans(), st.integers(1, 60_000)),
        min_size=1,
        max_size=6,
    )
)
def test_data_frames_follow_the_priorities(streams: list[tuple[int, bool, int]]) -> None:
    pair = Pair()
    open_windows(pair)
    sids = []
    for u, i, _ in streams:
        sids.append(pair.request(with_priority(f"u={u}" + (", i" if i else ""))))
    pair.exchange()
    for sid, (_, _, size) in zip(sids, streams, strict=True):
        pair.respond(sid, b"x" * size)
    frames = data_frames(pair.server.data_to_send())
    prio = {sid: (u, i) for sid, (u, i, _) in zip(sids, streams, strict=True)}
    # Every body is complete, and more urgent ones never wait for less urgent ones.
    for sid, (_, _, size) in zip(sids, streams, strict=True):
        assert sum(n for s, n, _ in frames if s == sid) == size
    urgencies = [prio[sid][0] for sid, _, _ in frames]
    assert urgencies == sorted(urgencies)
    # A non-incremental response is sent whole once started, unless incremental ones of
    # its urgency take their turns in between.
    for sid, (u, incremental) in prio.items():
        if incremental or any(prio[o] == (u, True) for o in sids):
            continue
        positions = [n for n, (s, _, _) in enumerate(frames) if s == sid]
        assert positions == list(range(positions[0], positions[-1] + 1))


@settings(max_examples=EXAMPLES // 4, deadline=None)
@given(
    st.lists(
        st.tuples(st.integers(0, 7), st.booleans(), st.integers(1, 150_000)),
        min_size=2,
        max_size=5,
    ),
    st.lists(st.tuples(st.integers(-1, 4), st.integers(1, 80_000)), max_size=25),
)
def test_the_most_urgent_stream_that_can_send_is_served(
    streams: list[tuple[int, bool, int]], openings: list[tuple[int, int]]
) -> None:
    # The client opens windows bit by bit (-1: the connection's); a model of the server's
    # send windows checks each DATA frame: no more urgent stream could have sent instead.
    pair = Pair()
    pair.client.update_settings({SettingCodes.INITIAL_WINDOW_SIZE: 0})
    pair.exchange()
    sids = [pair.request(with_priority(f"u={u}" + (", i" if i else ""))) for u, i, _ in streams]
    pair.exchange()
    urgency = {sid: u for sid, (u, _, _) in zip(sids, streams, strict=True)}
    left = {sid: size for sid, (_, _, size) in zip(sids, streams, strict=True)}
    window = dict.fromkeys(sids, 0)
    connection = 65535
    for sid in sids:
        pair.respond(sid, b"x" * left[sid])
    # At the end every stream window opens wide, then the connection's: they all compete.
    wide = [*((n, 2**24) for n in range(len(sids))), (-1, 2**24)]
    for target, increment in [*openings, *wide]:
        if 0 <= target < len(sids):
            if not left[sids[target]]:
                continue  # complete: the stream is closed
            pair.client.increment_flow_control_window(increment, sids[target])
            window[sids[target]] += increment
        else:
            pair.client.increment_flow_control_window(increment)
            connection += increment
        pair.to_server()
        out = pair.server.data_to_send()
        for sid, n, _ in data_frames(out):
            could = [o for o in sids if left[o] and window[o] > 0 and connection > 0]
            assert n == 0 or all(urgency[o] >= urgency[sid] for o in could), (sid, could)
            left[sid] -= n
            window[sid] -= n
            connection -= n
        pair.client.receive_data(out)
    assert not any(left.values())  # every body complete once the windows are wide open


def test_an_upgraded_request_keeps_its_priority_field() -> None:
    # RFC 7540 §3.2: the HTTP/1.1 request becomes stream 1, its Priority field with it.
    cli, http2_settings = upgrade_client()
    request = upgrade_request(http2_settings, b"Priority: u=7\r\n")[0]
    server = H2Connection()
    server.initiate_upgrade(http2_settings, request)
    cli.receive_data(server.data_to_send()[len(UPGRADE_RESPONSE) :])
    cli.send_headers(3, GET, end_stream=True)  # u=3: more urgent than stream 1's u=7
    server.receive_data(cli.data_to_send(), 0.0)
    for sid in (1, 3):
        server.send_response(sid, "200 OK", [])
        server.send_data(sid, b"x" * 20_000, end_stream=True)
    order = [sid for sid, _, _ in data_frames(server.data_to_send())]
    assert order == [3, 3, 1, 1]
