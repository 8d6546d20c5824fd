"""The control socket's address and client: what ``preforkd status`` and ``top`` speak.

The master listens on a UNIX socket (``--control-socket``; mode 0600 in a 0700
directory, so only its user can connect; never TCP). The protocol is one JSON object
per line each way::

    -> {"command": "status"}
    <- {"ok": true, "status": {"master": {...}, "workers": [...]}}
    -> {"command": "reload"}            (also "ttin", "ttou")
    <- {"ok": true}
    -> {"command": "nonsense"}
    <- {"ok": false, "error": "unknown command 'nonsense'"}

A client may send several requests on one connection (``top`` does, once a second).

Where the socket lives by default ("auto"): ``$RUNTIME_DIRECTORY`` (systemd's
``RuntimeDirectory=``), else ``$XDG_RUNTIME_DIR/preforkd``, else
``/tmp/preforkd-<uid>``; the file is named after the master's pid
(``preforkd-<pid>.sock``), so several servers of one user do not collide, and a new
master started by USR2 has its own beside the old one's until that one exits. ``preforkd
status`` with no ``--control-socket`` looks at every socket in that directory.

This module is neutral ground, like ``heartbeat.py``: the CLI tools and the master
import it, and it imports neither.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import stat
from pathlib import Path
from typing import Any

AUTO = "auto"
OFF = "off"
PREFIX = "preforkd-"
SUFFIX = ".sock"
CONNECT_TIMEOUT = 5.0


class ControlError(Exception):
    """The server could not be reached or answered with an error."""


def runtime_dir(environ: dict[str, str] | None = None) -> Path:
    """The directory of the "auto" control sockets for this user."""
    env = os.environ if environ is None else environ
    if env.get("RUNTIME_DIRECTORY"):
        return Path(env["RUNTIME_DIRECTORY"].split(":")[0])
    if env.get("XDG_RUNTIME_DIR"):
        return Path(env["XDG_RUNTIME_DIR"]) / "preforkd"
    return Path(f"/tmp/preforkd-{os.getuid()}")


def socket_path(setting: str, pid: int) -> Path | None:
    """The path the master binds for ``--control-socket`` ``setting`` (None: off)."""
    if setting == OFF or not setting:
        return None
    if setting == AUTO:
        return runtime_dir() / f"{PREFIX}{pid}{SUFFIX}"
    return Path(setting)


def private_dir(path: Path) -> None:
    """Create the socket's directory 0700 if missing; refuse one another user owns or
    others can write, where someone could swap the socket for their own."""
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    info = path.stat()
    if info.st_uid != os.getuid():
        raise OSError(f"{path} belongs to uid {info.st_uid}, not to us")
    if info.st_mode & (stat.S_IWGRP | stat.S_IWOTH) and not info.st_mode & stat.S_ISVTX:
        raise OSError(f"{path} is writable by others")


def found_sockets(directory: Path | None = None) -> list[Path]:
    """The "auto" sockets of this user's servers, oldest master first."""
    where = runtime_dir() if directory is None else directory
    try:
        names = [p for p in where.iterdir() if p.name.startswith(PREFIX)]
        paths = [p for p in names if p.name.endswith(SUFFIX)]
    except OSError:
        return []
    return sorted(paths, key=lambda p: _pid_of(p))


def _pid_of(path: Path) -> int:
    try:
        return int(path.name[len(PREFIX) : -len(SUFFIX)])
    except ValueError:
        return 0


class ControlClient:
    """A connection to one master's control socket."""

    def __init__(self, path: Path, timeout: float = CONNECT_TIMEOUT) -> None:
        self.path = path
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._sock.settimeout(timeout)
        try:
            self._sock.connect(str(path))
        except OSError as exc:
            self._sock.close()
            raise ControlError(f"cannot connect to {path}: {exc.strerror or exc}") from None
        self._buffer = b""

    def close(self) -> None:
        self._sock.close()

    def __enter__(self) -> ControlClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def call(self, command: str) -> dict[str, Any]:
        """Send one command; returns the reply (raises ControlError on ``ok: false``)."""
        try:
            self._sock.sendall(json.dumps({"command": command}).encode() + b"\n")
            while b"\n" not in self._buffer:
                data = self._sock.recv(65536)
                if not data:
                    raise ControlError(f"{self.path}: the server closed the connection")
                self._buffer += data
        except OSError as exc:
            raise ControlError(f"{self.path}: {exc.strerror or exc}") from None
        line, self._buffer = self._buffer.split(b"\n", 1)
        reply: dict[str, Any] = json.loads(line)
        if not reply.get("ok"):
            raise ControlError(f"{self.path}: {reply.get('error', 'request refused')}")
        return reply


def remove_stale(directory: Path) -> None:
    """Remove "auto" sockets whose master is gone (killed, so it could not clean up)."""
    for path in found_sockets(directory):
        pid = _pid_of(path)
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            with contextlib.suppress(OSError):
                path.unlink()
        except PermissionError:
            pass  # alive, another user's (not in our directory, normally)
