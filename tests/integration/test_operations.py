"""Operating a running server: the control socket, ``preforkd status``, ``preforkd top``
and the Prometheus metrics, against real preforkd processes."""

from __future__ import annotations

import json
import os
import pty
import select
import signal
import socket
import stat
import sys
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import h2.connection
import h2.events
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.integration.conftest import Start
from tests.integration.harness import (
    ROOT,
    Preforkd,
    free_port,
    raw_request,
    run_preforkd,
    wait_for,
)

pytestmark = pytest.mark.timeout(120)


def control(path: Path, command: str) -> dict[str, Any]:
    with socket.socket(socket.AF_UNIX) as sock:
        sock.settimeout(10)
        sock.connect(str(path))
        sock.sendall(json.dumps({"command": command}).encode() + b"\n")
        data = b""
        while not data.endswith(b"\n"):
            chunk = sock.recv(65536)
            assert chunk, "the control socket closed without a reply"
            data += chunk
    reply: dict[str, Any] = json.loads(data)
    return reply


def status(path: Path) -> dict[str, Any]:
    reply = control(path, "status")
    assert reply["ok"], reply
    result: dict[str, Any] = reply["status"]
    return result


def get(server: Preforkd, target: str) -> bytes:
    assert server.port is not None
    request = f"GET {target} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n".encode()
    return raw_request("127.0.0.1", server.port, request, timeout=10)


def scrape(port: int) -> dict[str, Any]:
    """The metrics page as {sample name + labels: value}, read by prometheus_client."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        assert response.headers["Content-Type"].startswith("text/plain; version=0.0.4")
        text = response.read().decode()
    samples: dict[str, Any] = {"_types": {}}
    for family in text_string_to_metric_families(text):
        samples["_types"][family.name] = family.type
        for sample in family.samples:
            labels = ",".join(f"{k}={v}" for k, v in sorted(sample.labels.items()))
            samples[f"{sample.name}{{{labels}}}"] = sample.value
    return samples


@pytest.fixture
def ops_server(start_server: Start, tmp_path: Path) -> tuple[Preforkd, Path, int]:
    sock = tmp_path / "ctl.sock"
    metrics = free_port()
    server = start_server(
        "control:app", "--workers", "4", "--request-timeout", "60",
        "--control-socket", str(sock), "--metrics-bind", f"127.0.0.1:{metrics}",
    )  # fmt: skip
    wait_for(lambda: len(status(sock)["workers"]) == 4, what="four workers in the status")
    return server, sock, metrics


def test_status_shows_master_and_workers(
    ops_server: tuple[Preforkd, Path, int], tmp_path: Path
) -> None:
    server, sock, _ = ops_server
    assert stat.S_IMODE(sock.stat().st_mode) == 0o600
    for _ in range(20):
        assert get(server, "/").startswith(b"HTTP/1.1 200")
    mark = tmp_path / "slow-started"
    slow = socket.create_connection(("127.0.0.1", server.port or 0))
    slow.sendall(f"GET /slow?seconds=30&mark={mark} HTTP/1.1\r\nHost: t\r\n\r\n".encode())
    wait_for(mark.exists, what="the slow request to reach the app")

    def settled() -> dict[str, Any] | None:
        state = status(sock)
        busy = [w for w in state["workers"] if w["oldest"]]
        served = sum(w["requests"] for w in state["workers"])
        return state if busy and served >= 20 else None

    state: dict[str, Any] = wait_for(settled, what="the status to show the requests")  # type: ignore[assignment]
    master = state["master"]
    assert master["pid"] == server.pid
    assert master["state"] == "running" and master["generation"] == 1
    assert master["workers_wanted"] == 4 and master["app"] == "control:app"
    assert {w["state"] for w in state["workers"]} == {"serving"}
    assert sorted(w["slot"] for w in state["workers"]) == [1, 2, 3, 4]
    assert sorted(w["pid"] for w in state["workers"]) == sorted(server.workers())
    busy = next(w for w in state["workers"] if w["oldest"])
    assert busy["oldest"]["method"] == "GET"
    assert busy["oldest"]["path"].startswith("/slow?seconds=30")
    assert busy["in_flight"] == 1 and busy["connections"]["h1"] >= 1
    assert all(w["rss"] > 1_000_000 for w in state["workers"])
    assert all(w["heartbeat_age"] is not None and w["heartbeat_age"] < 5 for w in state["workers"])
    slow.close()

    text = run_preforkd(["status", "--control-socket", str(sock)])
    assert text.returncode == 0, text.stderr
    lines = text.stdout.splitlines()
    assert lines[0].startswith("preforkd 0.1.0 · master pid") and "control:app" in lines[0]
    header = next(i for i, line in enumerate(lines) if line.split()[:2] == ["WORKER", "PID"])
    assert len(lines[header + 1 :]) == 4  # a row per worker
    as_json = run_preforkd(["status", "--control-socket", str(sock), "--json"])
    assert json.loads(as_json.stdout)["master"]["pid"] == server.pid


def test_status_counts_http2_connections(ops_server: tuple[Preforkd, Path, int]) -> None:
    server, sock, _ = ops_server
    with socket.create_connection(("127.0.0.1", server.port or 0)) as conn:
        h2conn = h2.connection.H2Connection()
        h2conn.initiate_connection()
        conn.sendall(h2conn.data_to_send())
        h2conn.send_headers(
            1, [(":method", "GET"), (":path", "/"), (":scheme", "http"), (":authority", "t")],
            end_stream=True,
        )  # fmt: skip
        conn.sendall(h2conn.data_to_send())
        ended = False
        while not ended:
            events = h2conn.receive_data(conn.recv(65536))
            ended = any(isinstance(e, h2.events.StreamEnded) for e in events)
            conn.sendall(h2conn.data_to_send())

        def counted() -> bool:
            workers = status(sock)["workers"]
            return sum(w["connections"]["h2"] for w in workers) == 1

        wait_for(counted, what="the HTTP/2 connection in the status")


def test_control_socket_reload_and_scaling(ops_server: tuple[Preforkd, Path, int]) -> None:
    server, sock, _ = ops_server
    assert control(sock, "ttin") == {"ok": True}
    wait_for(lambda: len(status(sock)["workers"]) == 5, what="a fifth worker")
    assert control(sock, "ttou") == {"ok": True}
    wait_for(lambda: status(sock)["master"]["workers_wanted"] == 4, what="back to four")
    assert control(sock, "reload") == {"ok": True}

    def reloaded() -> bool:
        state = status(sock)
        gens = {w["generation"] for w in state["workers"]}
        return state["master"]["generation"] == 2 and gens == {2} and len(state["workers"]) == 4

    wait_for(reloaded, timeout=30, what="generation 2 alone")
    assert "control socket: reload" in server.log()
    bad = control(sock, "explode")
    assert bad["ok"] is False and "unknown command" in bad["error"]
    with socket.socket(socket.AF_UNIX) as raw:
        raw.settimeout(10)
        raw.connect(str(sock))
        raw.sendall(b"not json\n")
        assert json.loads(raw.recv(65536))["ok"] is False
    server.check_running()


def test_metrics_sum_all_workers_across_a_reload(ops_server: tuple[Preforkd, Path, int]) -> None:
    server, _, metrics = ops_server
    for target, count in (("/", 10), ("/status?code=404", 3), ("/error", 2)):
        for _ in range(count):
            get(server, target)

    def counted() -> dict[str, Any] | None:
        page = scrape(metrics)
        done = page["preforkd_requests_total{protocol=h1,status=2xx}"] >= 10
        return (
            page if done and page["preforkd_requests_total{protocol=h1,status=5xx}"] >= 2 else None
        )

    page: dict[str, Any] = wait_for(counted, what="the requests in the metrics")  # type: ignore[assignment]
    types = page["_types"]
    assert types["preforkd_requests"] == "counter"
    assert types["preforkd_request_duration_seconds"] == "histogram"
    assert types["preforkd_connections"] == "gauge"
    assert page["preforkd_requests_total{protocol=h1,status=4xx}"] == 3
    assert page["preforkd_requests_total{protocol=h1,status=5xx}"] == 2
    total = sum(v for k, v in page.items() if k.startswith("preforkd_requests_total{"))
    assert page["preforkd_request_duration_seconds_count{}"] == total
    assert page["preforkd_request_duration_seconds_bucket{le=+Inf}"] == total
    assert page["preforkd_workers{}"] == 4 and page["preforkd_generation{}"] == 1
    rss = [k for k in page if k.startswith("preforkd_worker_resident_memory_bytes{")]
    assert len(rss) == 4
    assert page["preforkd_response_body_bytes_total{}"] > 0

    server.signal(signal.SIGHUP)

    def after_reload() -> dict[str, Any] | None:
        page = scrape(metrics)
        restarts = page["preforkd_worker_restarts_total{reason=reload}"]
        return page if restarts == 4 and page["preforkd_workers{}"] == 4 else None

    page = wait_for(after_reload, timeout=30, what="four reload restarts")  # type: ignore[assignment]
    # The retired workers' counts are kept: the counters did not go back.
    assert page["preforkd_requests_total{protocol=h1,status=2xx}"] >= 10
    assert page["preforkd_requests_total{protocol=h1,status=4xx}"] == 3
    assert page["preforkd_generation{}"] == 2
    assert page["preforkd_worker_restarts_total{reason=crash}"] == 0
    get(server, "/exit?code=3")
    wait_for(
        lambda: scrape(metrics)["preforkd_worker_restarts_total{reason=crash}"] == 1,
        what="the crash in the metrics",
    )
    with urllib.request.urlopen(f"http://127.0.0.1:{metrics}/metrics", timeout=10) as response:
        assert response.status == 200
    with pytest.raises(urllib.error.HTTPError) as missing:
        urllib.request.urlopen(f"http://127.0.0.1:{metrics}/", timeout=10)
    assert missing.value.code == 404


def test_top_shows_workers_takes_keys_and_quits(ops_server: tuple[Preforkd, Path, int]) -> None:
    _, sock, _ = ops_server
    pid, fd = pty.fork()
    if pid == 0:  # the child: preforkd top on a terminal
        os.execvpe(
            sys.executable,
            [sys.executable, "-m", "preforkd", "top", "--control-socket", str(sock)],
            {**os.environ, "PYTHONPATH": str(ROOT)},
        )
    screen = Screen(fd)
    try:
        # A whole frame (top's key help is its last line) with a row per worker.
        screen.wait_until(lambda frame: "q quit" in frame and frame.count("serving") == 4)
        os.write(fd, b"+")
        screen.wait_for("sent ttin")
        wait_for(lambda: len(status(sock)["workers"]) == 5, what="TTIN from top")
        os.write(fd, b"q")
        assert screen.wait_exit(pid) == 0
    finally:
        os.close(fd)


def test_top_exits_when_the_server_stops(start_server: Start, tmp_path: Path) -> None:
    sock = tmp_path / "ctl.sock"
    server = start_server("examples.hello:app", "--control-socket", str(sock))
    pid, fd = pty.fork()
    if pid == 0:
        os.execvpe(
            sys.executable,
            [sys.executable, "-m", "preforkd", "top", "--control-socket", str(sock)],
            {**os.environ, "PYTHONPATH": str(ROOT)},
        )
    screen = Screen(fd)
    try:
        screen.wait_for("WORKER")
        server.signal(signal.SIGTERM)
        assert server.wait_exit() == 0
        assert screen.wait_exit(pid) == 0
        assert "the server has stopped" in screen.text()
        assert not sock.exists()  # the master removed its socket
    finally:
        os.close(fd)


def test_auto_control_socket_is_found_by_status(start_server: Start, tmp_path: Path) -> None:
    runtime = tmp_path / "run"
    env = {"XDG_RUNTIME_DIR": str(runtime), "RUNTIME_DIRECTORY": ""}
    server = start_server("examples.hello:app", env=env)
    directory = runtime / "preforkd"
    sock = directory / f"preforkd-{server.pid}.sock"
    wait_for(sock.exists, what="the auto control socket")
    assert stat.S_IMODE(directory.stat().st_mode) == 0o700
    result = run_preforkd(["status", "--json"], env=env)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["master"]["pid"] == server.pid
    server.signal(signal.SIGTERM)
    server.wait_exit()
    assert not sock.exists()
    gone = run_preforkd(["status"], env=env)
    assert gone.returncode == 1 and "no running server" in gone.stderr


def test_an_app_named_like_a_subcommand(start_server: Start, tmp_path: Path) -> None:
    apps = tmp_path / "apps"
    apps.mkdir()
    (apps / "top.py").write_text(
        "def application(environ, start_response):\n"
        "    start_response('200 OK', [])\n"
        "    return [b'top app']\n"
    )
    server = start_server("top:application", "--chdir", str(apps))
    assert get(server, "/").endswith(b"top app")


class Screen:
    """What a program on a pseudo-terminal has written, read with deadlines."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.data = b""

    def _read(self, timeout: float) -> bool:
        ready, _, _ = select.select([self.fd], [], [], timeout)
        if ready:
            try:
                chunk = os.read(self.fd, 65536)
            except OSError:  # EIO: the program has exited
                return False
            self.data += chunk
            return bool(chunk)
        return True

    def text(self) -> str:
        return self.data.decode(errors="replace")

    def wait_until(self, whole: Callable[[str], bool], timeout: float = 20.0) -> None:
        """Until the last frame drawn (the text after the last screen clear) satisfies
        ``whole``; a frame may arrive in pieces."""
        deadline = time.monotonic() + timeout
        while not whole(self.text().rsplit("\x1b[2J", 1)[-1]):
            if time.monotonic() > deadline:
                raise TimeoutError(f"no such frame on the screen:\n{self.text()[-2000:]}")
            if not self._read(0.2):
                raise AssertionError(f"the program ended:\n{self.text()[-2000:]}")

    def wait_for(self, needle: str, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        while needle not in self.text():
            if time.monotonic() > deadline:
                raise TimeoutError(f"{needle!r} not on the screen:\n{self.text()[-2000:]}")
            if not self._read(0.2) and needle not in self.text():
                raise AssertionError(f"the program ended before {needle!r}:\n{self.text()}")

    def wait_exit(self, pid: int, timeout: float = 20.0) -> int:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self._read(0.1)
            done, status_code = os.waitpid(pid, os.WNOHANG)
            if done:
                return os.waitstatus_to_exitcode(status_code)
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        raise TimeoutError(f"top did not exit:\n{self.text()[-2000:]}")


def test_usr2_hands_the_control_socket_and_metrics_port_over(
    ops_server: tuple[Preforkd, Path, int],
) -> None:
    from tests.integration.test_reload import new_master_pid, stop_by_pid

    server, sock, metrics = ops_server
    server.signal(signal.SIGUSR2)
    successor = new_master_pid(server)
    try:
        assert server.wait_exit(timeout=60) == 0  # the old master handed over and left
        wait_for(lambda: status(sock)["master"]["pid"] == successor, what="the new master")
        assert sock.exists()  # the old master did not remove the new one's socket
        assert stat.S_IMODE(sock.stat().st_mode) == 0o600
        assert scrape(metrics)["preforkd_workers{}"] == 4
    finally:
        stop_by_pid(successor)
    wait_for(lambda: not sock.exists(), what="the new master to remove its socket")
