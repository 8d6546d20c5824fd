"""Running real preforkd processes for integration tests.

Readiness and every other wait is a loop with a deadline, never a fixed sleep. Each test
ends only the processes it started, by PID.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
APPS = Path(__file__).resolve().parent / "apps"
DEFAULT_DEADLINE = 15.0


def wait_for(
    condition: Callable[[], object], timeout: float = DEFAULT_DEADLINE, what: str = ""
) -> object:
    """Poll ``condition`` until it returns something truthy, or fail at the deadline."""
    deadline = time.monotonic() + timeout
    delay = 0.005
    while True:
        result = condition()
        if result:
            return result
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout}s waiting for {what or condition}")
        time.sleep(delay)  # back-off between polls of a deadline loop, not synchronisation
        delay = min(delay * 2, 0.1)


def free_port(host: str = "127.0.0.1") -> int:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


class Preforkd:
    """A preforkd master started as a subprocess, with its error log in a file."""

    def __init__(
        self,
        args: list[str],
        tmp_path: Path,
        env: dict[str, str] | None = None,
        cwd: Path | None = None,
        pass_fds: tuple[int, ...] = (),
        preexec_fn: Callable[[], None] | None = None,
    ) -> None:
        self.args = args
        self.pass_fds = pass_fds  # descriptors the master inherits (fd://N binds)
        self.preexec_fn = preexec_fn  # e.g. a lower RLIMIT_NOFILE for the server
        self.log_path = tmp_path / f"preforkd-{len(list(tmp_path.glob('preforkd-*.log')))}.log"
        self.env = {**os.environ, "PYTHONPATH": f"{APPS}{os.pathsep}{ROOT}", **(env or {})}
        self.cwd = cwd or ROOT
        self.proc: subprocess.Popen[bytes] | None = None
        self.port: int | None = None

    def start(self) -> Preforkd:
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "preforkd", *self.args],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=self.env,
                cwd=self.cwd,
                pass_fds=self.pass_fds,
                preexec_fn=self.preexec_fn,
            )
        return self

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_log(self, pattern: str, timeout: float = DEFAULT_DEADLINE, count: int = 1) -> str:
        regex = re.compile(pattern)
        wait_for(lambda: len(regex.findall(self.log())) >= count, timeout, f"log {pattern!r}")
        return self.log()

    def workers(self) -> list[int]:
        """PIDs of the master's live children (its workers), from /proc."""
        try:
            text = Path(f"/proc/{self.pid}/task/{self.pid}/children").read_text()
        except OSError:
            return []
        pids = [int(p) for p in text.split()]
        return [p for p in pids if _is_alive(p)]

    def wait_workers(self, n: int, timeout: float = DEFAULT_DEADLINE) -> list[int]:
        wait_for(lambda: len(self.workers()) == n, timeout, f"{n} workers")
        return self.workers()

    def wait_serving(
        self, host: str = "127.0.0.1", port: int | None = None, timeout: float = DEFAULT_DEADLINE
    ) -> None:
        """Until a worker answers an HTTP request (not just until the port accepts)."""
        port = port or self.port
        assert port is not None

        def answered() -> bool:
            self.check_running()
            request = b"GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n"
            try:
                return raw_request(host, port, request, timeout=2).startswith(b"HTTP/1.1")
            except OSError:
                return False

        try:
            wait_for(answered, timeout, "the server to answer")
        except TimeoutError as exc:  # the log says why
            raise TimeoutError(f"{exc}; its log:\n{self.log()}") from None

    def check_running(self) -> None:
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise AssertionError(f"preforkd exited with {self.proc.returncode}:\n{self.log()}")

    def signal(self, sig: int) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)

    def wait_exit(self, timeout: float = DEFAULT_DEADLINE) -> int:
        assert self.proc is not None
        return self.proc.wait(timeout)

    def stop(self) -> None:
        """End the master we started (and so its workers), by PID, whatever state it is in."""
        if self.proc is None or self.proc.poll() is not None:
            return
        workers = self.workers()
        self.proc.send_signal(signal.SIGINT)
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)
        for pid in workers:  # a worker that outlived a killed master
            if _is_alive(pid):
                os.kill(pid, signal.SIGKILL)


def run_preforkd(
    args: list[str],
    env: dict[str, str] | None = None,
    cwd: Path | None = None,
    timeout: float = DEFAULT_DEADLINE,
) -> subprocess.CompletedProcess[str]:
    """Run ``python -m preforkd ARGS`` to completion (for options that exit at once)."""
    return subprocess.run(
        [sys.executable, "-m", "preforkd", *args],
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
        env={**os.environ, "PYTHONPATH": f"{APPS}{os.pathsep}{ROOT}", **(env or {})},
        cwd=cwd or ROOT,
        timeout=timeout,
    )


def cmdline(pid: int) -> str:
    """The command line of a process as ps shows it (its title, once set)."""
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return ""
    return raw.replace(b"\0", b" ").decode(errors="replace").strip()


def is_alive(pid: int) -> bool:
    """True while ``pid`` exists and is not a zombie."""
    return _is_alive(pid)


def _is_alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


def raw_request(host: str, port: int, data: bytes, timeout: float = 5.0) -> bytes:
    """Send raw bytes, read until the server closes (or the timeout), return all bytes."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family) as sock:
        sock.settimeout(timeout)
        sock.connect((host, port))
        sock.sendall(data)
        chunks = []
        try:
            while chunk := sock.recv(65536):
                chunks.append(chunk)
        except TimeoutError:
            pass
        return b"".join(chunks)


def read_response(sock: socket.socket) -> tuple[bytes, bytes]:
    """Read one HTTP/1.1 response framed by Content-Length off a kept-alive socket:
    (head, body). Nothing after the body is read."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(4096)
        assert chunk, f"connection closed before a response: {data!r}"
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = int(head.lower().split(b"content-length:")[1].split(b"\r\n")[0])
    while len(body) < length:
        chunk = sock.recv(max(4096, length - len(body)))
        assert chunk, "connection closed in the body"
        body += chunk
    return head, body
