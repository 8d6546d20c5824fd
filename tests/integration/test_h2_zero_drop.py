"""HTTP/2 clients lose nothing across reloads, upgrades and recycling (issue 10).

A draining worker finishes every HTTP/2 stream it took, then sends the final GOAWAY of
RFC 9113 §6.8 naming the last of them (the two-step GOAWAY only for a connection that
never goes quiet: see README "TLS and HTTP/2") and closes lingering, so the GOAWAY is
read. :class:`H2Load` behaves as a client should: no new
stream on a connection after its GOAWAY, streams above the last id sent again on a new
connection. Any stream the server took and did not answer is a failure.
"""

from __future__ import annotations

import signal
import socket
import time
from collections.abc import Callable

import h2.config
import h2.connection
import h2.events
import pytest

from tests.integration.h2_load import H2Load
from tests.integration.harness import Preforkd, cmdline, wait_for
from tests.integration.test_reload import LOOPS, new_master_pid, stop_by_pid

Start = Callable[..., Preforkd]
RECYCLING = ("--max-requests", "300", "--max-requests-jitter", "50")
pytestmark = pytest.mark.timeout(120)


@pytest.mark.parametrize("loop", LOOPS)
def test_hup_ttou_and_recycling_lose_no_http2_stream(start_server: Start, loop: str) -> None:
    server = start_server("probe:app", "-w", "3", *RECYCLING, "--loop", loop)
    assert server.port is not None
    with H2Load(server.port, "/pid") as load:
        load.wait_more(1000)
        for generation in (2, 3):
            server.signal(signal.SIGHUP)
            server.wait_log(rf"generation {generation} is ready")
            load.wait_more(1000)
        server.signal(signal.SIGTTOU)
        wait_for(lambda: len(server.workers()) == 2, what="two workers after TTOU")
        load.wait_more(1000)
    server.check_running()
    assert server.log().count("recycling this worker") >= 3, "recycling never happened"
    assert load.goaways > 0, "no GOAWAY seen: the drain was not exercised"
    load.assert_no_failure()


@pytest.mark.parametrize("loop", LOOPS)
def test_usr2_upgrade_loses_no_http2_stream(start_server: Start, loop: str) -> None:
    server = start_server("probe:app", "-w", "2", "--loop", loop)
    assert server.port is not None
    new_master = 0
    try:
        with H2Load(server.port, "/pid") as load:
            load.wait_more(1000)
            server.signal(signal.SIGUSR2)
            new_master = new_master_pid(server)
            assert server.wait_exit(timeout=30) == 0
            load.wait_more(1000)
        assert load.goaways > 0, "no GOAWAY seen: the drain was not exercised"
        load.assert_no_failure()
    finally:
        if new_master:
            stop_by_pid(new_master)


def test_connection_that_turns_http2_while_its_worker_drains_is_served(
    start_server: Start,
) -> None:
    """A connection the old worker took before a reload, whose HTTP/2 preface and first
    request arrive once it drains, gets its answer and then a GOAWAY naming that stream.
    (It used to get GOAWAY(last stream 0) and a close: the request, already received, was
    never read.)"""
    server = start_server("probe:app", "-w", "1", "--header-timeout", "60")
    assert server.port is not None
    [old] = server.wait_workers(1)
    address = ("127.0.0.1", server.port)
    with (
        socket.create_connection(address, 10) as hold,
        socket.create_connection(address, 10) as late,
    ):
        # A slow request keeps the old worker draining; the other connection has sent only
        # the start of the preface (HTTP/1.1 or 2: undecided).
        hold.sendall(b"GET /slow?seconds=8 HTTP/1.1\r\nHost: a\r\n\r\n")
        late.sendall(b"PRI * HT")
        wait_for(lambda: " 2 conns · 1 busy" in cmdline(old), what="both connections taken")
        server.signal(signal.SIGHUP)
        wait_for(lambda: "draining" in cmdline(old), what="the old worker draining")
        client = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
        client.initiate_connection()
        client.send_headers(1, [(":method", "GET"), (":path", "/pid"), (":scheme", "http"),
                                (":authority", "a")], end_stream=True)  # fmt: skip
        late.sendall(client.data_to_send()[len(b"PRI * HT") :])
        status, body, goaway = _read_stream_1(late, client)
    assert status == b"200" and body == str(old).encode(), "the request was dropped"
    assert goaway == 1, "the final GOAWAY names the stream it served"


def _read_stream_1(
    sock: socket.socket, client: h2.connection.H2Connection
) -> tuple[bytes | None, bytes, int | None]:
    """(status, body, last stream id of a GOAWAY) of stream 1, read until the server closes."""
    status, body, goaway = None, b"", None
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        data = sock.recv(65536)
        if not data:
            break
        for event in client.receive_data(data):
            if isinstance(event, h2.events.ResponseReceived):
                status = dict(event.headers).get(b":status")
            elif isinstance(event, h2.events.DataReceived):
                body += event.data
            elif isinstance(event, h2.events.ConnectionTerminated):
                goaway = event.last_stream_id
        if goaway is not None:
            break
        sock.sendall(client.data_to_send())
    return status, body, goaway
