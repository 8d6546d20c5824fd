"""Single requests: is the server up, does it answer the workload correctly, how fast does
it start and how fast does it replace a killed worker."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from pathlib import Path

from procs import Server, children_of, cpu_seconds, is_alive
from workloads import Workload, url

POLL = 0.005  # seconds between readiness attempts


def http_get(port: int, path: str = "/", timeout: float = 5.0) -> int | None:
    """One HTTP/1.1 GET on a new connection; the status code, or None if it failed."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
            request = f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
            sock.sendall(request.encode())
            data = b""
            while b"\r\n" not in data:
                chunk = sock.recv(4096)
                if not chunk:
                    return None
                data += chunk
    except OSError:
        return None
    parts = data.split(b" ", 2)
    return int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else None


def can_connect(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1.0):
            return True
    except OSError:
        return False


def wait_ready(server: Server, port: int, proto: str, timeout: float) -> float | None:
    """Seconds from the server's start to its first answer (HTTP/1.1: a 200; otherwise an
    accepted connection), or None if it exited or the timeout passed."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and not server.exited():
        ok = http_get(port, timeout=2.0) == 200 if proto == "h1" else can_connect(port)
        if ok:
            return time.monotonic() - server.started_at
        time.sleep(POLL)
    return None


def check_answer(w: Workload, port: int, data_dir: Path) -> str | None:
    """Check one request of the workload with curl (status, HTTP version, body).

    Returns None when the answer is right, else what is wrong with it."""
    argv = ["curl", "-sS", "--max-time", "10", "-o", "-", "-w", "\n%{http_code} %{http_version}"]
    argv.append({"h1": "--http1.1", "h2c": "--http2-prior-knowledge", "tls": "--http2"}[w.proto])
    if w.proto == "tls":
        argv.append("-k")
    if w.post:
        argv += ["-H", "Expect:", "-H", "Content-Type: application/octet-stream"]
        argv += ["--data-binary", f"@{data_dir / 'body1m.bin'}"]
    if w.close:
        argv += ["-H", "Connection: close"]
    argv.append(url(w, port))
    try:
        done = subprocess.run(argv, capture_output=True, timeout=20)
    except subprocess.TimeoutExpired:
        return "no answer within 20 s"
    body, _, tail = done.stdout.rpartition(b"\n")
    fields = tail.decode(errors="replace").split()
    if done.returncode != 0 or len(fields) != 2:
        error = done.stderr.decode(errors="replace").strip().splitlines()
        return f"curl exit {done.returncode}: {error[-1] if error else '?'}"
    status, version = fields
    problems = []
    if status != "200":
        problems.append(f"status {status}")
    wanted = "1.1" if w.proto == "h1" else "2"
    if version != wanted:
        problems.append(f"HTTP/{version} instead of HTTP/{wanted}")
    if w.expect is not None and body.strip() != w.expect.encode():
        problems.append(f"body {body[:40]!r}")
    if w.expect_len is not None and len(body) != w.expect_len:
        problems.append(f"body of {len(body)} bytes")
    return "; ".join(problems) or None


def busiest_worker(server: Server) -> int | None:
    """The child of the server's main process that has used the most CPU: the worker that
    answered the requests so far (other children are helpers, if any)."""
    children = children_of(server.pid)
    if not children:
        return None
    return max(children, key=lambda pid: cpu_seconds([pid]))


def measure_respawn(server: Server, port: int, timeout: float = 20.0) -> tuple[float | None, str]:
    """SIGKILL the busiest worker; seconds until a request on a new connection is answered.

    The listening socket belongs to the master, so a connection made while no worker is
    alive waits in the backlog: its answer comes from the replacement worker."""
    for _ in range(20):  # give it some requests, so the serving worker stands out
        http_get(port)
    worker = busiest_worker(server)
    if worker is None:
        return None, "no worker process (the main process serves)"
    killed_at = time.monotonic()
    os.kill(worker, signal.SIGKILL)  # a PID of the tree we started, never by name
    while is_alive(worker) and time.monotonic() - killed_at < 5:
        time.sleep(0.001)
    deadline = killed_at + timeout
    while time.monotonic() < deadline:
        if server.exited():
            return None, "the server exited when its worker died"
        if http_get(port, timeout=max(0.1, deadline - time.monotonic())) == 200:
            return time.monotonic() - killed_at, "ok"
        time.sleep(POLL)
    return None, f"no answer within {timeout:.0f} s"
