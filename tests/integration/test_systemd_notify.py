"""sd_notify with real preforkd processes: a datagram socket stands in for systemd's."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from preforkd.master.notify import monotonic_usec
from tests.integration.harness import ROOT, Preforkd, free_port, is_alive, raw_request, wait_for


class FakeSystemd:
    """The receiving end of $NOTIFY_SOCKET: every datagram, as a list of lines."""

    def __init__(self, address: str | bytes) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(address)
        self.sock.setblocking(False)
        self.messages: list[list[str]] = []

    def _drain(self) -> None:
        while True:
            try:
                data = self.sock.recv(4096)
            except BlockingIOError:
                return
            self.messages.append(data.decode().splitlines())

    def wait(self, key: str, count: int = 1, timeout: float = 20.0) -> list[list[str]]:
        """Until ``count`` messages carry the line ``key`` (e.g. "READY=1")."""

        def seen() -> bool:
            self._drain()
            return sum(key in m for m in self.messages) >= count

        wait_for(seen, timeout, f"{count} x {key} (got {self.messages})")
        return self.messages

    def summary(self) -> list[list[str]]:
        """The messages without their values that vary (STATUS text, times, pids)."""
        self._drain()
        return [[line.split("=")[0] for line in m] for m in self.messages]


@pytest.fixture
def systemd(tmp_path: Path) -> Iterator[tuple[FakeSystemd, str]]:
    name = f"@preforkd-test-{os.getpid()}-{time.monotonic_ns()}"  # abstract: no path limit
    fake = FakeSystemd(b"\0" + name[1:].encode())
    yield fake, name
    fake.sock.close()


def start(tmp_path: Path, notify: str, *args: str, env: dict[str, str] | None = None) -> Preforkd:
    port = free_port()
    argv = ["examples.hello:app", "--bind", f"127.0.0.1:{port}", *args]
    server = Preforkd(argv, tmp_path, env={"NOTIFY_SOCKET": notify, **(env or {})})
    server.port = port
    return server.start()


def test_start_hup_term_sequence(tmp_path: Path, systemd: tuple[FakeSystemd, str]) -> None:
    fake, address = systemd
    server = start(tmp_path, address, "--workers", "2")
    try:
        fake.wait("READY=1")
        assert len(server.workers()) == 2  # READY once the whole first generation serves
        server.wait_serving()
        server.signal(signal.SIGHUP)
        fake.wait("READY=1", count=2)
        server.signal(signal.SIGTERM)
        assert server.wait_exit(30) == 0
        fake.wait("STOPPING=1")
    finally:
        server.stop()
    assert fake.summary() == [
        ["READY", "STATUS"],
        ["RELOADING", "MONOTONIC_USEC", "STATUS"],
        ["READY", "STATUS"],
        ["STOPPING", "STATUS"],
    ]
    ready, reloading, ready2, _ = fake.messages
    assert ready[1] == "STATUS=serving: generation 1, 2 worker(s)"
    assert ready2[1] == "STATUS=serving: generation 2, 2 worker(s)"
    sent = int(reloading[1].removeprefix("MONOTONIC_USEC="))
    assert 0 < monotonic_usec() - sent < 60_000_000  # CLOCK_MONOTONIC, in microseconds


def test_usr2_new_master_announces_its_pid(
    tmp_path: Path, systemd: tuple[FakeSystemd, str]
) -> None:
    fake, address = systemd
    server = start(tmp_path, address)
    new_pid = 0
    try:
        fake.wait("READY=1")
        server.wait_serving()
        server.signal(signal.SIGUSR2)
        messages = fake.wait("READY=1", count=2, timeout=40)
        mainpid = messages[1][0]
        assert mainpid.startswith("MAINPID=")
        new_pid = int(mainpid.removeprefix("MAINPID="))
        assert new_pid != server.pid
        assert server.wait_exit(30) == 0  # the old master goes once the new one serves
        assert is_alive(new_pid)
        assert server.port is not None
        request = b"GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n"
        assert raw_request("127.0.0.1", server.port, request).startswith(b"HTTP/1.1 200")
        # The old master has exited: a STOPPING=1 from it would be in the socket now.
        assert fake.summary() == [["READY", "STATUS"], ["MAINPID", "READY", "STATUS"]]
        os.kill(new_pid, signal.SIGTERM)
        fake.wait("STOPPING=1")
        wait_for(lambda: not is_alive(new_pid), 30, "the new master to exit")
    finally:
        server.stop()
        if new_pid and is_alive(new_pid):
            os.kill(new_pid, signal.SIGKILL)
    assert fake.summary()[-1] == ["STOPPING", "STATUS"]


def test_watchdog_pings_at_half_the_interval(
    tmp_path: Path, systemd: tuple[FakeSystemd, str]
) -> None:
    fake, address = systemd
    server = start(tmp_path, address, env={"WATCHDOG_USEC": "400000"})
    try:
        fake.wait("READY=1")
        first = time.monotonic()
        fake.wait("WATCHDOG=1", count=6, timeout=30)
        elapsed = time.monotonic() - first
        assert elapsed >= 0.6  # every 0.2 s, not in a burst
    finally:
        server.stop()


def test_watchdog_for_another_pid_is_not_ours(
    tmp_path: Path, systemd: tuple[FakeSystemd, str]
) -> None:
    fake, address = systemd
    server = start(tmp_path, address, env={"WATCHDOG_USEC": "200000", "WATCHDOG_PID": "1"})
    try:
        fake.wait("READY=1")
        server.wait_serving()
        server.signal(signal.SIGTERM)
        assert server.wait_exit(30) == 0
        fake.wait("STOPPING=1")
    finally:
        server.stop()
    assert ["WATCHDOG"] not in fake.summary()


def test_path_address(tmp_path: Path) -> None:
    path = Path(f"/tmp/preforkd-notify-{os.getpid()}-{time.monotonic_ns()}")
    fake = FakeSystemd(str(path))
    server = start(tmp_path, str(path))
    try:
        fake.wait("READY=1")
    finally:
        server.stop()
        fake.sock.close()
        path.unlink()


# What systemd does for preforkd.socket + preforkd.service: bind the socket, start the
# service with it at descriptor 3, LISTEN_PID=<its pid>, LISTEN_FDS=1, NOTIFY_SOCKET.
SYSTEMD_EXEC = """
import os, sys
os.dup2(int(sys.argv[1]), 3)
os.close(int(sys.argv[1]))
os.environ.update(LISTEN_PID=str(os.getpid()), LISTEN_FDS="1")
os.execv(sys.executable, [sys.executable, "-m", "preforkd", *sys.argv[2:]])
"""


def test_socket_activation_with_notify(tmp_path: Path, systemd: tuple[FakeSystemd, str]) -> None:
    fake, address = systemd
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(128)
    port = listener.getsockname()[1]
    log_path = tmp_path / "activated.log"
    env = {**os.environ, "NOTIFY_SOCKET": address, "PYTHONPATH": str(ROOT)}
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-c", SYSTEMD_EXEC, str(listener.fileno()), "examples.hello:app"],
            stdout=log, stderr=subprocess.STDOUT, env=env, cwd=ROOT,
            pass_fds=(listener.fileno(),),
        )  # fmt: skip
    listener.close()  # the service holds it now (systemd would keep its own copy)
    try:
        fake.wait("READY=1")
        assert "socket activation: using 1 socket(s)" in log_path.read_text()
        request = b"GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n"
        assert raw_request("127.0.0.1", port, request).startswith(b"HTTP/1.1 200")
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    assert fake.summary() == [["READY", "STATUS"], ["STOPPING", "STATUS"]]
