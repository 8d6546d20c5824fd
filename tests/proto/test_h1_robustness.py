"""Whatever the peer sends, the core either returns well-formed event sequences or raises
RemoteProtocolError: no other exception, and no event out of order."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from preforkd.errors import RemoteProtocolError
from preforkd.proto.events import ConnectionClosed, Data, EndOfMessage, Event, Request

from .h1_support import EXAMPLES, feed, load_cases

# With the native head parser and with llhttp alone (tests/proto/conftest.py).
pytestmark = pytest.mark.usefixtures("h1_head_parser")

SETTINGS = settings(
    max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
SEEDS = [case.data for case in load_cases("valid") + load_cases("invalid") if len(case.data) < 2000]


def check_grammar(events: list[Event]) -> None:
    """(Request Data* EndOfMessage)* [Request Data*] [ConnectionClosed]."""
    in_message = False
    for i, event in enumerate(events):
        if isinstance(event, Request):
            assert not in_message
            in_message = True
        elif isinstance(event, Data):
            assert in_message and event.data
        elif isinstance(event, EndOfMessage):
            assert in_message
            in_message = False
        else:
            assert isinstance(event, ConnectionClosed)
            assert i == len(events) - 1 and not in_message


def outcome(data: bytes, splits: list[int], eof: bool) -> None:
    try:
        conn, events = feed(data, splits)
        if eof:
            events += conn.receive_data(b"")
    except RemoteProtocolError as exc:
        assert 400 <= exc.status <= 599
        return
    check_grammar(events)


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    data = bytearray(draw(st.sampled_from(SEEDS)))
    for _ in range(draw(st.integers(1, 4))):
        pos = draw(st.integers(0, len(data)))
        action = draw(st.sampled_from(["flip", "insert", "delete"]))
        byte = draw(st.sampled_from(b"\x00\t\n\r :;,0fF-+\x7f\x80\xff" + bytes(range(0x41, 0x5B))))
        if action == "insert" or pos == len(data):
            data[pos:pos] = bytes([byte])
        elif action == "flip":
            data[pos] = byte
        else:
            del data[pos]
    return bytes(data)


@SETTINGS
@given(mutated(), st.lists(st.integers(0, 3000), max_size=8), st.booleans())
def test_mutated_requests_fail_cleanly(data: bytes, splits: list[int], eof: bool) -> None:
    outcome(data, [s for s in splits if s <= len(data)], eof)


@SETTINGS
@given(st.binary(max_size=300), st.booleans())
def test_random_bytes_fail_cleanly(data: bytes, eof: bool) -> None:
    outcome(data, [], eof)
