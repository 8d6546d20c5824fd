"""Processes: start a server in its own session, watch its tree, stop it by PID.

Everything here reads /proc (Linux only). A server is the process we started plus all its
descendants (master, workers, helpers); memory and CPU are summed over that tree. Stopping
sends SIGTERM to the PID we started, then SIGKILL to the PIDs of its tree that outlive the
grace period: never anything by name, as other people's servers run on the same machine.
"""

from __future__ import annotations

import contextlib
import os
import resource
import signal
import socket
import subprocess
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

HZ = os.sysconf("SC_CLK_TCK")


def raise_fd_limit(wanted: int = 65536) -> int:
    """Raise our soft RLIMIT_NOFILE (children inherit it); returns the new soft limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        soft = target
    return soft


def port_is_free(port: int) -> bool:
    for family, host in ((socket.AF_INET, "127.0.0.1"), (socket.AF_INET6, "::1")):
        with socket.socket(family, socket.SOCK_STREAM) as sock:
            try:
                sock.bind((host, port))
            except OSError as exc:
                if family == socket.AF_INET6 and exc.errno == 99:  # no IPv6 loopback here
                    continue
                return False
    return True


class PortPicker:
    """Hands out ports from a range, skipping those that something else listens on."""

    def __init__(self, first: int, last: int) -> None:
        self.first, self.last = first, last
        self._next = first

    def take(self) -> int:
        for _ in range(self.last - self.first + 1):
            port = self._next
            self._next = self.first if port >= self.last else port + 1
            if port_is_free(port):
                return port
        raise RuntimeError(f"no free port in {self.first}-{self.last}")


# --- /proc ---------------------------------------------------------------------------------


def _stat_fields(pid: int) -> list[str] | None:
    """Fields of /proc/PID/stat after the command name (field 3 onwards)."""
    try:
        data = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return data[data.rindex(")") + 2 :].split()


def process_tree(pid: int) -> list[int]:
    """``pid`` and all its descendants."""
    children: dict[int, list[int]] = {}
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            fields = _stat_fields(int(entry.name))
            if fields is not None:
                children.setdefault(int(fields[1]), []).append(int(entry.name))
    tree, todo = [], [pid]
    while todo:
        p = todo.pop()
        tree.append(p)
        todo.extend(children.get(p, ()))
    return tree


def children_of(pid: int) -> list[int]:
    return [p for p in process_tree(pid) if p != pid and parent_of(p) == pid]


def parent_of(pid: int) -> int | None:
    fields = _stat_fields(pid)
    return int(fields[1]) if fields else None


def session_members(sid: int) -> list[int]:
    """Live processes of session ``sid``: a server started with start_new_session and all
    its descendants, even those re-parented to init after their parent died."""
    members = []
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            fields = _stat_fields(int(entry.name))
            if fields is not None and int(fields[3]) == sid and fields[0] not in ("Z", "X"):
                members.append(int(entry.name))
    return members


def is_alive(pid: int) -> bool:
    fields = _stat_fields(pid)
    return fields is not None and fields[0] not in ("Z", "X")


def cpu_seconds(pids: Iterable[int]) -> float:
    """User + system CPU time of these processes (all their threads)."""
    ticks = 0
    for pid in pids:
        fields = _stat_fields(pid)
        if fields is not None:
            ticks += int(fields[11]) + int(fields[12])
    return ticks / HZ


def status_kib(pid: int, key: str) -> int:
    """A "kB" line of /proc/PID/status (VmRSS, VmHWM...), 0 when the process is gone."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def tree_kib(pid: int, key: str) -> int:
    return sum(status_kib(p, key) for p in process_tree(pid))


def machine_busy_seconds() -> float:
    """CPU time charged to tasks on the whole machine (user + nice + system)."""
    with open("/proc/stat") as f:
        values = f.readline().split()[1:]
    return (int(values[0]) + int(values[1]) + int(values[2])) / HZ


def wait_until_quiet(max_busy: float, max_wait: float, interval: float = 0.5) -> float:
    """Wait (at most ``max_wait`` s) until the machine uses at most ``max_busy`` CPUs.

    Returns the last busy figure. Other people's tests on a shared box would otherwise
    end up in the numbers."""
    deadline = time.monotonic() + max_wait
    while True:
        before = machine_busy_seconds()
        time.sleep(interval)
        busy = (machine_busy_seconds() - before) / interval
        if busy <= max_busy or time.monotonic() >= deadline:
            return busy


class CpuShares:
    """Who used the CPUs between start() and stop(): the server's process tree, our children
    (the load generator; waited for, so counted in RUSAGE_CHILDREN) and everything else
    on the machine but us. Figures are CPUs (1.0 = one CPU busy the whole time)."""

    def __init__(self, server_pid: int) -> None:
        self.server_pid = server_pid
        self.server = self.children = self.other = 0.0

    @staticmethod
    def _own_and_children() -> tuple[float, float]:
        mine = resource.getrusage(resource.RUSAGE_SELF)
        children = resource.getrusage(resource.RUSAGE_CHILDREN)
        return mine.ru_utime + mine.ru_stime, children.ru_utime + children.ru_stime

    def start(self) -> None:
        self._server0 = cpu_seconds(process_tree(self.server_pid))
        self._machine0 = machine_busy_seconds()
        self._mine0, self._children0 = self._own_and_children()
        self._t0 = time.monotonic()

    def stop(self) -> None:
        elapsed = time.monotonic() - self._t0
        server = cpu_seconds(process_tree(self.server_pid)) - self._server0
        mine, children = self._own_and_children()
        mine, children = mine - self._mine0, children - self._children0
        machine = machine_busy_seconds() - self._machine0
        self.server, self.children = server / elapsed, children / elapsed
        self.other = max(0.0, machine - server - children - mine) / elapsed


# --- a server process ------------------------------------------------------------------------


@dataclass
class Server:
    """A server we started: its PID, its log and how to stop it."""

    argv: Sequence[str]
    cwd: Path
    log_path: Path
    env: Mapping[str, str] = field(default_factory=dict)
    proc: subprocess.Popen[bytes] | None = None
    started_at: float = 0.0

    def start(self) -> None:
        env = {**os.environ, **self.env}
        with open(self.log_path, "wb") as log:
            self.started_at = time.monotonic()
            self.proc = subprocess.Popen(
                list(self.argv),
                cwd=self.cwd,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # our Ctrl-C must not reach it before we stop it
            )

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def exited(self) -> bool:
        return self.proc is None or self.proc.poll() is not None

    def log_tail(self, lines: int = 5) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.strip().splitlines()[-lines:])

    def stop(self, timeout: float = 10.0) -> str:
        """SIGTERM the PID we started, then SIGKILL, by PID, what is left of its session
        (it leads its own session, so that is exactly its descendants)."""
        proc = self.proc
        if proc is None:
            return "not started"
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout)
        deadline = time.monotonic() + timeout
        while (alive := session_members(proc.pid)) and time.monotonic() < deadline:
            time.sleep(0.05)
        outcome = "ok"
        for pid in alive:
            try:
                os.kill(pid, signal.SIGKILL)
                outcome = "killed"
            except ProcessLookupError:
                pass
        proc.wait(timeout)
        return outcome
