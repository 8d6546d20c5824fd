"""Generated traffic: the events do not depend on how the bytes are cut, and no input makes
the core fail other than with H2ProtocolError."""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import h2.config
import h2.connection
from h2.settings import SettingCodes
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from preforkd.proto.events import Event
from preforkd.proto.h2 import H2Connection, H2ProtocolError

from .h2_helpers import DATE, EXAMPLES, PREFACE, frame, merge_data

SETTINGS = settings(
    max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)

_TCHAR = "!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyz"
_VCHAR = "".join(chr(c) for c in range(0x21, 0x7F))

_SPECIAL = {"connection", "te", "host", "content-length", "upgrade", "keep-alive"}
_SPECIAL |= {"transfer-encoding", "proxy-connection"}
names = st.text(_TCHAR, min_size=1, max_size=10).filter(lambda n: n not in _SPECIAL)
values = st.text(_VCHAR, max_size=12)
paths = st.text(_VCHAR.replace("#", ""), max_size=20).map(lambda p: "/" + p)


@dataclass
class Req:
    method: str
    path: str
    fields: list[tuple[str, str]]
    body: list[bytes]
    padding: int | None
    trailers: list[tuple[str, str]]
    reset: bool


requests = st.builds(
    Req,
    st.sampled_from(["GET", "POST", "PUT", "HEAD"]),
    paths,
    st.lists(st.tuples(names, values), max_size=5),
    st.lists(st.binary(min_size=1, max_size=200), max_size=3),
    st.none() | st.integers(0, 20),
    st.lists(st.tuples(names, values), max_size=2),
    st.booleans(),
)
extras = st.lists(st.sampled_from(["ping", "settings", "window", "priority"]), max_size=4)


def client_bytes(reqs: list[Req], extra: list[str]) -> bytes:
    """The bytes a real h2 client sends for these requests (never reading the answers)."""
    client = h2.connection.H2Connection(
        h2.config.H2Configuration(client_side=True, header_encoding="utf-8")
    )
    client.initiate_connection()
    chunks = [client.data_to_send()]
    for index, req in enumerate(reqs):
        sid = client.get_next_available_stream_id()
        headers = [(":method", req.method), (":scheme", "https"), (":path", req.path)]
        headers += [(":authority", "example.com"), *req.fields]
        ends_now = not req.body and not req.trailers and not req.reset
        client.send_headers(sid, headers, end_stream=ends_now)
        for i, piece in enumerate(req.body):
            last = i == len(req.body) - 1 and not req.trailers and not req.reset
            client.send_data(sid, piece, end_stream=last, pad_length=req.padding)
        if req.trailers:
            client.send_headers(sid, req.trailers, end_stream=True)
        if req.reset:
            client.reset_stream(sid, 8)
        if index < len(extra):
            kind = extra[index]
            if kind == "ping":
                client.ping(b"%08d" % index)
            elif kind == "settings":
                client.update_settings({SettingCodes.MAX_FRAME_SIZE: 20000 + index})
            elif kind == "window":
                client.increment_flow_control_window(1000)
            else:
                client.prioritize(sid, weight=index + 1)
        chunks.append(client.data_to_send())
    return b"".join(chunks)


def run(data: bytes, cuts: list[int]) -> tuple[list[Event], bytes]:
    server = H2Connection()
    server.date_header = DATE
    server.initiate()
    events: list[Event] = []
    out = [server.data_to_send()]
    bounds = [0, *sorted(set(cuts)), len(data)]
    for start, end in itertools.pairwise(bounds):
        if end > start:
            events += server.receive_data(data[start:end], 0.0)
            out.append(server.data_to_send())
    return events, b"".join(out)


@SETTINGS
@given(st.lists(requests, min_size=1, max_size=6), extras, st.data())
def test_cutting_the_bytes_anywhere_gives_the_same_events(
    reqs: list[Req], extra: list[str], data: st.DataObject
) -> None:
    raw = client_bytes(reqs, extra)
    whole_events, whole_out = run(raw, [])
    cuts = data.draw(st.lists(st.integers(0, len(raw)), max_size=12))
    events, out = run(raw, cuts)
    assert merge_data(events) == merge_data(whole_events)
    assert out == whole_out
    # And byte by byte, the hardest cut of all, for the first example's worth of input.
    if len(raw) < 600:
        events, out = run(raw, list(range(len(raw))))
        assert merge_data(events) == merge_data(whole_events)


def run_buffered(data: bytes, cuts: list[int], scratch_size: int, empties: set[int]) -> list[Event]:
    """As ``run``, but the way the adapter reads: into a buffer lent for each read, which
    other connections overwrite in between (and after reads that bring nothing)."""
    server = H2Connection()
    server.date_header = DATE
    server.initiate()
    scratch = bytearray(scratch_size)
    events: list[Event] = []
    bounds = [0, *sorted(set(cuts)), len(data)]
    for index, (start, end) in enumerate(itertools.pairwise(bounds)):
        while start < end:
            if index in empties:  # EAGAIN: no buffer_updated; another read reuses scratch
                server.get_buffer(scratch)
                scratch[:] = b"\xee" * scratch_size
            view = server.get_buffer(scratch)
            size = min(len(view), end - start)
            view[:size] = data[start : start + size]
            events += server.buffer_updated(size, 0.0)
            scratch[:] = b"\xff" * scratch_size  # the next connection's read
            start += size
        server.data_to_send()
    return events


@SETTINGS
@given(st.lists(requests, min_size=1, max_size=6), extras, st.data())
def test_reading_into_a_lent_buffer_gives_the_same_events(
    reqs: list[Req], extra: list[str], data: st.DataObject
) -> None:
    raw = client_bytes(reqs, extra)
    whole_events, _ = run(raw, [])
    cuts = data.draw(st.lists(st.integers(0, len(raw)), max_size=12))
    empties = set(data.draw(st.lists(st.integers(0, 12), max_size=4)))
    # Small buffers too: a frame begun in one read is then too big to move in front of
    # the next, and is completed in the reader's own buffer.
    size = data.draw(st.sampled_from([32, 100, 1000, 256 * 1024]))
    events = run_buffered(raw, cuts, size, empties)
    assert merge_data(events) == merge_data(whole_events)


frames = st.builds(
    frame,
    st.integers(0, 12),
    st.integers(0, 255),
    st.sampled_from([0, 1, 2, 3, 5, 2**31 - 1]),
    st.binary(max_size=40),
)


@SETTINGS
@given(st.lists(frames, max_size=12), st.data())
def test_arbitrary_frames_fail_only_as_protocol_errors(
    junk: list[bytes], data: st.DataObject
) -> None:
    server = H2Connection()
    server.initiate()
    # An open POST on stream 1 first, so that the junk meets a stream in every state.
    opened = frame(1, 4, 1, b"\x83\x86\x84\x41\x01a")
    stream = PREFACE + frame(4, 0, 0) + opened + b"".join(junk)
    cuts = data.draw(st.lists(st.integers(0, len(stream)), max_size=4))
    bounds = [0, *sorted(set(cuts)), len(stream)]
    try:
        for start, end in itertools.pairwise(bounds):
            if end > start:
                for event in server.receive_data(stream[start:end], 0.0):
                    sid = getattr(event, "stream_id", 0)
                    if sid and server.stream_open(sid):
                        server.send_response(sid, "200 OK", [])
                        server.send_data(sid, b"body", end_stream=True)
                server.data_to_send()
    except H2ProtocolError:
        assert server.done
        server.data_to_send()
