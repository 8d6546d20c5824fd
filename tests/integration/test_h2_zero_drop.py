"""HTTP/2 clients lose nothing across reloads, upgrades and recycling (issue 10).

A draining worker tells each HTTP/2 client with the two-step GOAWAY of RFC 9113 §6.8
(GOAWAY 2^31-1 and a PING, then the final GOAWAY naming the last stream it took) and
finishes every stream at or below it. :class:`H2Load` behaves as a client should: no new
stream on a connection after its GOAWAY, streams above the last id sent again on a new
connection. Any stream the server took and did not answer is a failure.
"""

from __future__ import annotations

import signal
from collections.abc import Callable

import pytest

from tests.integration.h2_load import H2Load
from tests.integration.harness import Preforkd, wait_for
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
