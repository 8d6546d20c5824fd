"""The master's side of the control socket (protocol: ``preforkd/control.py``).

:func:`open_control_socket` binds it; the arbiter serves it with an
:class:`~preforkd.master.endpoint.Endpoint` and answers each request in
``Arbiter.handle_control`` from :func:`worker_row` and the master's own state.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from preforkd.control import private_dir
from preforkd.heartbeat import Beat
from preforkd.master.endpoint import Endpoint, split_lines
from preforkd.master.workers import Worker

log = logging.getLogger("preforkd.master")

# Requests that become one of the master's signal commands (what the signal would do).
SIGNAL_REQUESTS = {"reload": "hup", "ttin": "ttin", "ttou": "ttou"}


@dataclass
class ControlSocket:
    """The bound control socket and the file that names it."""

    endpoint: Endpoint
    path: Path
    inode: int

    def close(self) -> None:
        """Stop serving; remove the file unless a newer master has taken the name."""
        self.endpoint.close()
        with contextlib.suppress(OSError):
            if os.stat(self.path).st_ino == self.inode:
                os.unlink(self.path)


def open_control_socket(path: Path, private: bool) -> ControlSocket:
    """Bind ``path`` (mode 0600) atomically: bound under a temporary name, then renamed
    over ``path``, so a new master (USR2) given the same path takes it over from the old
    one while both run, and no client ever finds a half-made socket. ``private``: the
    directory is ours alone (the "auto" one); else it is made if missing. Raises OSError."""
    if private:
        private_dir(path.parent)
    else:
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{os.getpid()}")
    with contextlib.suppress(FileNotFoundError):
        os.unlink(temporary)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        old_umask = os.umask(0o177)  # no window in which the socket is open to others
        try:
            sock.bind(str(temporary))
        finally:
            os.umask(old_umask)
        os.chmod(temporary, 0o600)
        sock.listen(16)
        os.rename(temporary, path)
    except OSError:
        sock.close()
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise
    return ControlSocket(Endpoint("control", sock, split_lines), path, os.stat(path).st_ino)


def parse_request(line: str) -> str:
    """The command named by one request line; raises ValueError with the reason."""
    try:
        request = json.loads(line)
    except json.JSONDecodeError:
        raise ValueError("a request is one JSON object per line") from None
    if not isinstance(request, dict) or not isinstance(request.get("command"), str):
        raise ValueError('a request is {"command": NAME}')
    command: str = request["command"]
    return command


def encode_reply(reply: dict[str, Any]) -> bytes:
    return json.dumps(reply, separators=(",", ":")).encode() + b"\n"


def worker_state(worker: Worker, beat: Beat | None) -> str:
    if not worker.ready and not worker.stopping:
        return "booting"
    if worker.stopping or (beat is not None and beat.draining):
        return "draining"
    return "serving"


def worker_row(worker: Worker, beat: Beat | None, now: float) -> dict[str, Any]:
    """One worker, as ``preforkd status`` shows it."""
    b = beat or Beat(worker.pid, 0.0, 0, 0, 0, False)
    oldest = None
    if b.oldest_start > 0:
        age = max(0.0, now - b.oldest_start)
        oldest = {"method": b.oldest_method, "path": b.oldest_path, "age": round(age, 3)}
    return {
        "slot": worker.slot,
        "pid": worker.pid,
        "generation": worker.generation,
        "age": round(now - worker.started, 3),
        "state": worker_state(worker, beat),
        "requests": b.requests,
        "rps": round(b.rate, 1),
        "connections": {"h1": b.connections - b.h2_connections, "h2": b.h2_connections},
        "in_flight": b.in_flight,
        "oldest": oldest,
        "rss": rss_bytes(worker.pid),
        "heartbeat_age": round(now - b.tick, 3) if b.tick > 0 else None,
    }


_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def rss_bytes(pid: int) -> int | None:
    """A process's resident set size (Linux /proc; None elsewhere or if it is gone)."""
    try:
        with open(f"/proc/{pid}/statm", "rb") as statm:
            return int(statm.read().split()[1]) * _PAGE
    except (OSError, ValueError, IndexError):
        return None
