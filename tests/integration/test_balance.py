"""Two workers share the load (issue 12): a pool of connections opened at once, and a
new connection per request, against a real ``--workers 2`` on 127.0.0.1.

Measured on the 2-CPU development machine (also with four CPU-bound processes beside it):
a burst of 64 lands 31/33 or 32/32 where it used to land 48/16 or 64/0; new connections
split within a few percent. The bounds below are looser, for a loaded machine.
"""

from __future__ import annotations

import re
import socket
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.integration.harness import Preforkd, raw_request, read_response, wait_for

Start = Callable[..., Preforkd]

POOL = 64
PID_REQUEST = b"GET /pid HTTP/1.1\r\nHost: t\r\n\r\n"
_SHARING = re.compile(
    r"\[(\d+)\] \[DEBUG\] Sharing connections with \d+ other worker\(s\): \[(.*)\]"
)


def _two_workers(start_server: Start, loop: str, *args: str) -> tuple[Preforkd, list[int]]:
    """A --workers 2 server whose workers have found each other (they log it)."""
    pytest.importorskip(loop)
    server = start_server(
        "probe:app", "--workers", "2", "--loop", loop, "--log-level", "debug", *args
    )
    workers = server.wait_workers(2)

    def found() -> bool:
        last: dict[int, list[int]] = {}
        for pid, peers in _SHARING.findall(server.log()):
            last[int(pid)] = [int(p) for p in peers.split(",") if p.strip()]
        return all(last.get(w) == [v for v in workers if v != w] for w in workers)

    wait_for(found, what="both workers to see each other")
    return server, workers


def _pool(port: int, n: int = POOL) -> list[socket.socket]:
    """``n`` connections opened at once (as a client's pool does), not one by one."""
    socks = []
    for _ in range(n):
        sock = socket.socket()
        sock.setblocking(False)
        sock.connect_ex(("127.0.0.1", port))
        socks.append(sock)
    for sock in socks:
        sock.setblocking(True)
        sock.settimeout(10)
    return socks


@pytest.mark.parametrize("loop", ["asyncio", "uvloop"])
def test_a_pool_of_connections_opened_at_once_is_shared(start_server: Start, loop: str) -> None:
    server, workers = _two_workers(start_server, loop)
    assert server.port is not None
    for _ in range(2):  # two pools: the old code's 48/16 was rarely even twice in a row
        socks = _pool(server.port)
        try:
            held: Counter[int] = Counter()
            for round_ in range(5):  # requests over the pool: the connections stay put
                for sock in socks:
                    sock.sendall(PID_REQUEST)
                pids = [int(read_response(sock)[1]) for sock in socks]
                if round_ == 0:
                    held = Counter(pids)
                assert Counter(pids) == held
            assert set(held) == set(workers)
            # Even would be 32/32; measured 31/33. At least 3/8 each on a loaded machine.
            stalls = re.findall(r".*took no turn.*", server.log())
            assert min(held.values()) >= POOL * 3 // 8, (held, stalls)
        finally:
            for sock in socks:
                sock.close()


def test_new_connections_per_request_are_shared(start_server: Start) -> None:
    server, workers = _two_workers(start_server, "uvloop")
    assert server.port is not None
    port = server.port
    served: Counter[int] = Counter()
    lock = threading.Lock()
    request = b"GET /pid HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n"

    def client() -> None:
        for _ in range(40):
            answer = raw_request("127.0.0.1", port, request, timeout=10)
            pid = int(answer.partition(b"\r\n\r\n")[2])
            with lock:
                served[pid] += 1

    threads = [threading.Thread(target=client) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert sum(served.values()) == 8 * 40
    assert set(served) == set(workers)
    assert min(served.values()) >= 8 * 40 // 4, served  # each at least a quarter


def test_a_worker_whose_loop_is_blocked_does_not_hold_up_accepting(
    start_server: Start, tmp_path: Path
) -> None:
    """The other worker yields to a less loaded peer only while that peer runs: with its
    loop blocked (--app-on-loop and a slow request), new clients are served by the other
    worker (after at most 200 ms of waiting for it) before the block ends."""
    pytest.importorskip("uvloop")
    server, workers = _two_workers(start_server, "uvloop", "--app-on-loop")
    assert server.port is not None
    socks = _pool(server.port)
    try:
        for sock in socks:
            sock.sendall(PID_REQUEST)
        owner = {sock: int(read_response(sock)[1]) for sock in socks}
        blocked = socks[0]
        other = next(w for w in workers if w != owner[blocked])
        started = tmp_path / "started"
        blocked.sendall(
            f"GET /slow?seconds=4&started={started} HTTP/1.1\r\nHost: t\r\n\r\n".encode()
        )
        wait_for(started.exists, what="the slow request to block its worker's loop")
        more = _pool(server.port, 16)  # more than the slack: the other worker must yield
        socks += more
        for sock in more:
            sock.sendall(PID_REQUEST)
        assert {int(read_response(sock)[1]) for sock in more} == {other}
        blocked.setblocking(False)
        with pytest.raises(BlockingIOError):  # all that happened while it was blocked
            blocked.recv(1)
        server.wait_log(r"took no turn in \d+ ms: accepting without them")
    finally:
        for sock in socks:
            sock.close()


@pytest.fixture(autouse=True)
def _bounded(request: pytest.FixtureRequest) -> Iterator[None]:
    started = time.monotonic()
    yield
    assert time.monotonic() - started < 60, f"{request.node.name} took too long"
