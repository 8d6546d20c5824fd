"""A connection's state stays bounded however many requests it has served (issue 10)."""

from __future__ import annotations

import tracemalloc

from h2.utilities import SizeLimitDict

from preforkd.proto.events import Request

from .h2_helpers import Pair


def _serve(pair: Pair, n: int) -> None:
    for _ in range(n):
        sid = pair.request()
        events = pair.to_server()
        assert isinstance(events[0], Request)
        pair.respond(sid)
        pair.to_client()
        pair.client.clear_outbound_data_buffer()


def test_memory_per_connection_does_not_grow_with_requests_served() -> None:
    pair = Pair()
    # The client is h2 too, with h2's own 65,536 closed-stream records: bound it, so that
    # what is measured is the server.
    pair.client._closed_streams = SizeLimitDict(size_limit=16)
    tracemalloc.start()  # before the warm-up, so that what it allocated is seen freed
    try:
        _serve(pair, 2_000)  # past every bounded record of closed streams (1,024)
        before = tracemalloc.take_snapshot()
        _serve(pair, 3_000)
        after = tracemalloc.take_snapshot()
    finally:
        tracemalloc.stop()
    grown = sum(stat.size_diff for stat in after.compare_to(before, "filename"))
    # Before the bound, h2 kept ~150 bytes per closed stream: 3,000 streams grew ~290 KB here.
    assert grown < 64 * 1024, f"grew by {grown} bytes over 3,000 requests"
