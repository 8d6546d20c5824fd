"""RFC 9218 priorities on the wire, from a real preforkd process to the ``h2`` library.

Each stream's body is written whole in one WSGI write, and the client starts with
SETTINGS_INITIAL_WINDOW_SIZE = 1: every response can send one byte, which tells the client
that the whole body is queued in the server. Only then does the client open the stream
windows (the connection window stays at its 64 KiB default, reopened as the client reads),
so every body competes for the same window and the order of the DATA frames is the
scheduler's alone.
"""

from __future__ import annotations

import itertools
import shutil
import subprocess
from collections.abc import Callable, Iterable, Iterator
from typing import Any
from urllib.parse import parse_qs

import h2.events
import pytest

from tests.integration.h2client import H2Client
from tests.integration.harness import Preforkd, free_port

APP = "tests.integration.test_h2_priority:app"
PRIORITY_UPDATE = 0x10


def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    """``/?size=N``: N bytes, in one write (so the whole body is queued at once)."""
    args = parse_qs(environ.get("QUERY_STRING", ""))
    size = int(args.get("size", ["5"])[-1])
    start_response("200 OK", [("Content-Type", "application/octet-stream")])
    return [b"x" * size]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Preforkd]:
    port = free_port()
    srv = Preforkd(
        [APP, "--bind", f"127.0.0.1:{port}", "--workers", "1", "--threads", "8"],
        tmp_path_factory.mktemp("h2prio"),
    )
    srv.port = port
    srv.start()
    srv.wait_serving()
    yield srv
    srv.stop()


def queued(srv: Preforkd, requests: list[tuple[int, str | None]]) -> tuple[H2Client, list[int]]:
    """Open a connection with 1-byte stream windows and send ``(size, priority)`` requests,
    one after the other; return once every body is queued in the server (its first byte
    has arrived). Nothing more can be sent until the client opens the windows."""
    assert srv.port is not None
    c = H2Client(srv.port, window=1, timeout=30)
    c.auto_ack = False  # no window opens by itself
    sids = []
    for size, priority in requests:
        headers = [("priority", priority)] if priority is not None else []
        sid = c.request(f"/?size={size}", headers=headers)
        c.wait(lambda sid=sid: len(c.responses[sid].body) == 1, timeout=30)
        sids.append(sid)
    return c, sids


def open_windows_and_read(c: H2Client, sids: list[int]) -> list[tuple[int, int, bool]]:
    """Open every stream window wide, read all, and return what came after: ``(stream id,
    bytes, END_STREAM)`` per DATA frame, in the order they arrived."""
    start = len(c.events)
    for sid in sids:
        c.conn.increment_flow_control_window(2**24, stream_id=sid)
    c.auto_ack = True  # the connection window reopens as the client reads
    c.flush()
    c.wait(lambda: all(c.responses[sid].ended for sid in sids), timeout=60)
    ended = {e.stream_id for e in c.events[start:] if isinstance(e, h2.events.StreamEnded)}
    assert ended == set(sids)
    frames = []
    for event in c.events[start:]:
        if isinstance(event, h2.events.DataReceived):
            end = event.stream_ended is not None
            frames.append((event.stream_id, len(event.data), end))
    return frames


def test_server_says_it_ignores_rfc7540_priorities(server: Preforkd) -> None:
    assert server.port is not None
    c = H2Client(server.port)
    c.get("/?size=1")
    assert c.conn.remote_settings[0x9] == 1  # SETTINGS_NO_RFC7540_PRIORITIES (RFC 9218 §2.1)
    c.close()


@pytest.mark.skipif(shutil.which("nghttp") is None, reason="nghttp is not installed")
def test_nghttp_sees_the_setting_and_is_served(server: Preforkd) -> None:
    # nghttp2's client, itself an RFC 9218 endpoint, announces the same setting; it also
    # sends RFC 7540 PRIORITY frames for idle streams, which are checked and ignored.
    urls = [f"http://127.0.0.1:{server.port}/?size={size}" for size in (70_000, 70_001)]
    argv = ["nghttp", "-v", "--no-rfc7540-pri", "-H", "priority: u=1, i", *urls]
    out = subprocess.run(argv, capture_output=True, text=True, timeout=30, check=True).stdout
    received = out[out.index("recv SETTINGS") :]
    assert "[SETTINGS_NO_RFC7540_PRIORITIES(0x09):1]" in received.split("recv", 2)[1]
    assert out.count(":status: 200") == 2
    assert "recv GOAWAY" not in out and "recv RST_STREAM" not in out


def test_small_urgent_response_asked_later_finishes_first(server: Preforkd) -> None:
    # Issue 10's test: a large u=7 download is queued first; a small u=0 one asked for
    # afterwards gets the whole window until it is complete.
    c, (large, small) = queued(server, [(2_000_000, "u=7"), (40_000, "u=0")])
    frames = open_windows_and_read(c, [large, small])
    order = [sid for sid, _, _ in frames]
    assert order[0] == small, f"the u=7 download went first: {order[:8]}"
    last_small = max(n for n, (sid, _, _) in enumerate(frames) if sid == small)
    assert frames[last_small][2], "the small response's last frame ends it"
    assert large not in order[:last_small], "DATA of the u=7 download came in between"
    assert len(c.responses[large].body) == 2_000_000
    assert len(c.responses[small].body) == 40_000
    c.close()


def test_incremental_responses_are_interleaved_frame_by_frame(server: Preforkd) -> None:
    # RFC 9218 §10: incremental responses of one urgency share the connection round-robin.
    c, sids = queued(server, [(300_000, "u=3, i"), (300_000, "u=3, i")])
    frames = open_windows_and_read(c, sids)
    order = [sid for sid, _, _ in frames]
    first_done = next(n for n, (_, _, end) in enumerate(frames) if end)
    while_both = order[: first_done + 1]
    assert len(while_both) >= 20  # 300 KB is about 18 frames of 16 KiB each
    assert all(a != b for a, b in itertools.pairwise(while_both)), (
        f"not one frame each in turn: {while_both}"
    )
    c.close()


def test_non_incremental_responses_go_whole_in_request_order(server: Preforkd) -> None:
    # The defaults (no priority field: u=3, not incremental): one after the other.
    c, (first, second) = queued(server, [(300_000, None), (300_000, None)])
    frames = open_windows_and_read(c, [first, second])
    order = [sid for sid, _, _ in frames]
    assert order == sorted(order, key=[first, second].index), "the responses were interleaved"
    c.close()


def test_priority_update_reorders_queued_responses(server: Preforkd) -> None:
    # Without it the first request would go first (same urgency, request order).
    c, (first, second) = queued(server, [(300_000, None), (40_000, None)])
    payload = second.to_bytes(4) + b"u=0"
    c.sock.sendall(len(payload).to_bytes(3) + bytes((PRIORITY_UPDATE, 0)) + bytes(4) + payload)
    frames = open_windows_and_read(c, [first, second])
    order = [sid for sid, _, _ in frames]
    assert order[: order.index(first)] == [second] * order.index(first)
    assert frames[order.index(first) - 1] == (second, frames[order.index(first) - 1][1], True)
    c.close()
