"""Accepting: the per-worker connection cap and running out of descriptors (issue 9)."""

from __future__ import annotations

import resource
import socket
import time
from collections.abc import Callable, Iterator

import pytest

from tests.integration.harness import Preforkd, read_response, wait_for

Start = Callable[..., Preforkd]

LOOPS = ["asyncio", "uvloop"]
PID_REQUEST = b"GET /pid HTTP/1.1\r\nHost: t\r\n\r\n"


def _pid_of(sock: socket.socket) -> int:
    """Ask /pid on a kept-alive connection; the worker's pid."""
    sock.sendall(PID_REQUEST)
    return int(read_response(sock)[1])


def _connect(port: int, n: int) -> list[socket.socket]:
    return [socket.create_connection(("127.0.0.1", port), timeout=10) for _ in range(n)]


@pytest.mark.parametrize("loop", LOOPS)
def test_worker_at_its_connection_cap_stops_accepting_until_one_closes(
    start_server: Start, loop: str
) -> None:
    pytest.importorskip(loop)
    server = start_server("probe:app", "--worker-connections", "10", "--loop", loop)
    assert server.port is not None
    socks = _connect(server.port, 10)
    try:
        for sock in socks:
            _pid_of(sock)  # all ten are served and stay open
        extra = socket.create_connection(("127.0.0.1", server.port), timeout=10)
        socks.append(extra)
        extra.sendall(PID_REQUEST)  # queued in the kernel: the worker is at its cap
        extra.settimeout(1.0)  # a bounded wait for something that must not happen
        with pytest.raises(TimeoutError):
            extra.recv(1)
        server.wait_log(r"At --worker-connections 10: not accepting")
        socks.pop(0).close()  # one closes: the queued one is taken and served
        extra.settimeout(10)
        assert extra.recv(4096).startswith(b"HTTP/1.1 200")
    finally:
        for sock in socks:
            sock.close()


def _low_fd_limit() -> None:
    resource.setrlimit(resource.RLIMIT_NOFILE, (96, 96))


@pytest.mark.parametrize("loop", LOOPS)
def test_running_out_of_descriptors_logs_once_pauses_and_recovers(
    start_server: Start, loop: str
) -> None:
    pytest.importorskip(loop)
    server = start_server("probe:app", "--loop", loop, preexec_fn=_low_fd_limit)
    assert server.port is not None
    assert "The open-file limit (96) is below --worker-connections (1000)" in server.log()
    socks: list[socket.socket] = []
    try:
        socks = _connect(server.port, 150)  # far more than 96 descriptors
        # The worker runs out of descriptors and must say so, once, without spinning.
        server.wait_log(r"Cannot accept connections: Too many open files")
        started = time.monotonic()
        wait_for(lambda: time.monotonic() - started > 2.0, what="two seconds of exhaustion")
        log = server.log()
        assert log.count("Cannot accept connections") == 1, log[-2000:]
        assert len(log) < 50_000, "the log is flooded"
        server.check_running()
        for sock in socks:
            sock.close()
        socks = []
        # Recovered without a restart: served again once descriptors are free.
        wait_for(lambda: _served(server.port), what="the worker to serve again")
        server.check_running()
    finally:
        for sock in socks:
            sock.close()


def _served(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=2) as sock:
            sock.settimeout(2)
            return _pid_of(sock) > 0
    except OSError:
        return False


@pytest.fixture(autouse=True)
def _bounded(request: pytest.FixtureRequest) -> Iterator[None]:
    started = time.monotonic()
    yield
    assert time.monotonic() - started < 40, f"{request.node.name} took too long"
