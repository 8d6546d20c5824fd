"""systemd's readiness protocol (``sd_notify``), spoken by the master.

It is one AF_UNIX datagram of ``KEY=value`` lines sent to the socket named by
``$NOTIFY_SOCKET`` (a path, or an abstract address written with a leading ``@``), so no
library is needed. See sd_notify(3) and systemd.service(5), ``Type=notify``.

What the master says, and when (the arbiter reports its state after each turn):

- ``READY=1`` once the first generation serves (all ``--workers`` ready);
- ``RELOADING=1`` + ``MONOTONIC_USEC=`` when a reload (HUP) starts generation N+1 next
  to N, then ``READY=1`` once N+1 took over, or once N+1 was abandoned and N serves on;
- ``STOPPING=1`` when a stop begins;
- ``STATUS=`` with each of them, a line for ``systemctl status``;
- ``WATCHDOG=1`` every half ``$WATCHDOG_USEC`` while the master's loop turns;
- ``MAINPID=`` from a new master started by USR2, with its first ``READY=1`` and before
  it tells the old master to stop: systemd then follows the new master, and the old
  one's exit does not stop the service. systemd accepts a message from a process other
  than the main one only with ``NotifyAccess=all`` (conf/preforkd.service), and reads
  notifications before it handles a child's exit, so the datagram sent before the old
  master is told to stop is seen before that master's exit. The old
  master says nothing more once it has handed over: its ``STOPPING=1`` would stop the
  service.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from collections.abc import Mapping

log = logging.getLogger("preforkd.master")

STARTING, READY, RELOADING, STOPPING = "starting", "ready", "reloading", "stopping"


def monotonic_usec() -> int:
    """CLOCK_MONOTONIC in microseconds: what systemd expects in ``MONOTONIC_USEC``."""
    return time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000


def socket_address(value: str) -> str | bytes | None:
    """The address in ``$NOTIFY_SOCKET``: a path, or ``@name`` for the abstract namespace."""
    if value.startswith("@"):
        return b"\0" + value[1:].encode()
    if value.startswith("/"):
        return value
    return None  # e.g. vsock:... (systemd in a VM): not supported here


class Notifier:
    """Sends the master's state changes to systemd; silent without ``$NOTIFY_SOCKET``."""

    def __init__(
        self, address: str | bytes | None, watchdog_usec: int = 0, upgraded: bool = False
    ) -> None:
        self.address = address
        self.state = STARTING
        self.muted = False  # handed over to a new master (USR2)
        self.upgraded = upgraded  # we are a new master started by USR2: announce our pid
        self.watchdog_interval = watchdog_usec / 2e6 if address is not None else 0.0
        self.watchdog_at: float | None = None
        if self.watchdog_interval > 0:
            self.watchdog_at = 0.0  # due at once
        self._warned = False

    @classmethod
    def from_environ(cls, environ: Mapping[str, str], upgraded: bool = False) -> Notifier:
        address = socket_address(environ.get("NOTIFY_SOCKET", ""))
        # $WATCHDOG_PID names the process systemd expects the pings from; a new master
        # started by USR2 inherited the old one's value and pings on its behalf.
        watched = environ.get("WATCHDOG_PID", str(os.getpid())) == str(os.getpid())
        usec = environ.get("WATCHDOG_USEC", "")
        watchdog = int(usec) if usec.isdigit() and (watched or upgraded) else 0
        return cls(address, watchdog, upgraded)

    @classmethod
    def disabled(cls) -> Notifier:
        return cls(None)

    def send(self, *lines: str) -> None:
        if self.address is None or self.muted:
            return
        message = "\n".join(lines).encode() + b"\n"
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
                sock.sendto(message, self.address)
        except OSError as exc:  # systemd gone or the socket unusable: never fatal
            if not self._warned:
                self._warned = True
                log.warning("cannot notify systemd at $NOTIFY_SOCKET: %s", exc)

    def update(
        self, stopping: bool, reloading: bool, serving: bool, generation: int, workers: int
    ) -> None:
        """Tell systemd about a change of state (nothing if there is none)."""
        if stopping:
            new = STOPPING
        elif reloading:
            new = RELOADING
        elif serving:
            new = READY
        else:
            new = self.state  # e.g. a worker being replaced: no news for systemd
        if new == self.state:
            return
        self.state = new
        if new == STOPPING:
            self.send("STOPPING=1", "STATUS=stopping")
        elif new == RELOADING:
            status = f"STATUS=reloading: starting generation {generation}"
            self.send("RELOADING=1", f"MONOTONIC_USEC={monotonic_usec()}", status)
        else:
            status = f"STATUS=serving: generation {generation}, {workers} worker(s)"
            first = (f"MAINPID={os.getpid()}",) if self.upgraded else ()
            self.upgraded = False
            self.send(*first, "READY=1", status)

    def hand_over(self) -> None:
        """A new master serves (USR2): it speaks to systemd from now on."""
        self.muted = True
        self.watchdog_at = None

    def watchdog(self, now: float) -> None:
        """Send ``WATCHDOG=1`` if due (``now``: the arbiter's monotonic clock)."""
        if self.watchdog_at is None or now < self.watchdog_at:
            return
        self.send("WATCHDOG=1")
        self.watchdog_at = now + self.watchdog_interval
