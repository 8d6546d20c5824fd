"""GOAWAY both ways, the two-step graceful shutdown of RFC 9113 §6.8, EOF and PING probes."""

from __future__ import annotations

import h2.events
import pytest
from hyperframe.frame import GoAwayFrame, PingFrame, RstStreamFrame

from preforkd.proto.events import ConnectionClosed, EndOfMessage, Request
from preforkd.proto.h2 import ErrorCodes, H2ProtocolError

from .h2_helpers import Pair, RawClient, frame, of_type


def test_graceful_shutdown_two_steps() -> None:
    raw = RawClient()
    raw.send(raw.headers(1))
    raw.frames()
    raw.server.start_graceful_shutdown()
    assert raw.server.shutting_down and not raw.server.done
    raw.received += raw.server.data_to_send()
    goaway, ping = raw.frames()
    assert isinstance(goaway, GoAwayFrame) and isinstance(ping, PingFrame)
    assert (goaway.last_stream_id, goaway.error_code) == (2**31 - 1, ErrorCodes.NO_ERROR)
    raw.send(frame(6, 1, 0, ping.opaque_data))  # the client has seen the GOAWAY
    (final,) = raw.frames()
    assert isinstance(final, GoAwayFrame)
    assert (final.last_stream_id, final.error_code) == (1, ErrorCodes.NO_ERROR)
    assert not raw.server.done  # stream 1 is still in progress
    raw.server.send_response(1, "200 OK", [], end_stream=True)
    assert raw.server.done


def test_streams_in_flight_during_the_first_goaway_are_served() -> None:
    raw = RawClient()
    raw.server.start_graceful_shutdown()
    events = raw.send(raw.headers(1))  # crossed the first GOAWAY on the wire
    assert [type(e) for e in events] == [Request, EndOfMessage]
    raw.server.finish_graceful_shutdown()  # the PING timed out
    raw.received += raw.server.data_to_send()
    goaways = of_type(raw.frames(), GoAwayFrame)
    assert [g.last_stream_id for g in goaways] == [2**31 - 1, 1]


def test_streams_after_the_final_goaway_are_refused() -> None:
    raw = RawClient()
    raw.send(raw.headers(1))
    raw.server.finish_graceful_shutdown()
    raw.frames()
    events = raw.send(raw.headers(3))
    assert events == []
    resets = [(f.stream_id, f.error_code) for f in raw.frames() if isinstance(f, RstStreamFrame)]
    assert resets == [(3, ErrorCodes.REFUSED_STREAM)]
    raw.server.send_response(1, "200 OK", [], end_stream=True)
    assert raw.server.done


def test_idle_connection_is_done_after_the_final_goaway() -> None:
    pair = Pair()
    pair.server.start_graceful_shutdown()
    assert not pair.server.done
    pair.server.finish_graceful_shutdown()
    assert pair.server.done
    pair.server.finish_graceful_shutdown()  # idempotent
    pair.server.start_graceful_shutdown()


def test_client_goaway_closes_the_connection() -> None:
    # h2spec 6.8 and 7/1: a GOAWAY, even with an unknown error code, ends the connection.
    raw = RawClient()
    events = raw.send(frame(7, 0, 0, (0).to_bytes(4) + (0xFF).to_bytes(4)))
    assert events == [ConnectionClosed()]
    assert raw.server.done and raw.server.closed
    assert raw.send(raw.headers(1)) == []


def test_goaway_on_a_stream_is_a_connection_error() -> None:
    raw = RawClient()
    with pytest.raises(H2ProtocolError) as info:
        raw.send(frame(7, 0, 1, bytes(8)))
    assert info.value.error_code == ErrorCodes.PROTOCOL_ERROR


def test_eof() -> None:
    pair = Pair()
    assert pair.server.receive_data(b"", 0.0) == [ConnectionClosed()]
    assert pair.server.done
    assert pair.server.receive_data(b"more", 0.0) == []


def test_errors_are_sticky() -> None:
    raw = RawClient()
    with pytest.raises(H2ProtocolError) as first:
        raw.send(frame(9, 4, 1, b""))
    with pytest.raises(H2ProtocolError) as again:
        raw.send(raw.headers(1))
    assert again.value is first.value
    assert raw.server.done


def test_connection_error_goaway_names_the_last_stream() -> None:
    raw = RawClient()
    raw.send(raw.headers(1) + raw.headers(3))
    raw.frames()
    with pytest.raises(H2ProtocolError):
        raw.send(frame(6, 0, 0, b"short"))  # PING of the wrong length
    raw.received += raw.server.data_to_send()
    (goaway,) = of_type(raw.frames(), GoAwayFrame)
    assert (goaway.last_stream_id, goaway.error_code) == (3, ErrorCodes.FRAME_SIZE_ERROR)


def test_ping_probe() -> None:
    pair = Pair()
    pair.now = 5.0
    pair.server.ping(1.0)
    assert pair.server.ping_outstanding_since == 1.0
    pair.server.ping(2.0)  # one at a time
    assert pair.server.ping_outstanding_since == 1.0
    pair.exchange()
    assert pair.server.ping_outstanding_since is None
    assert pair.server.last_ping_ack == 5.0


def test_client_ping_is_acknowledged() -> None:
    pair = Pair()
    pair.client.ping(b"12345678")
    _, events = pair.exchange()
    (ack,) = of_type(events, h2.events.PingAckReceived)
    assert ack.ping_data == b"12345678"
