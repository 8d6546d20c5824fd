"""Flow control (RFC 9113 §5.2, §6.9): the windows we grant, and the ones we must respect.

A receive window is what we let the peer send: DATA consumes it (padding included, §6.1),
and it reopens only as the application consumes what was delivered -- that is the upload
backpressure. Reopening in small increments would cost a WINDOW_UPDATE frame per read, so
an increment is announced once half the window has been consumed, or, when the window is
shut, once a little has (h2's policy, which real clients are used to).

A send window is a plain ``int`` on the connection and on each stream: the peer opens it
with WINDOW_UPDATE, and a change of SETTINGS_INITIAL_WINDOW_SIZE moves every stream's by
the difference, possibly below zero (§6.9.2).
"""

from __future__ import annotations

from preforkd.proto.h2.settings import MAX_WINDOW

__all__ = ["MAX_WINDOW", "ReceiveWindow"]


class ReceiveWindow:
    """A window we grant the peer: ``size`` when everything delivered has been consumed."""

    __slots__ = ("available", "consumed", "size")

    def __init__(self, size: int, available: int | None = None) -> None:
        self.size = size
        self.available = size if available is None else available  # the peer may send this
        self.consumed = 0  # consumed by the application, not yet given back

    def receive(self, nbytes: int) -> bool:
        """The peer sent ``nbytes`` of DATA; False if that is beyond the window."""
        if nbytes > self.available:
            return False
        self.available -= nbytes
        return True

    def give_back(self, nbytes: int) -> int:
        """``nbytes`` were consumed; the WINDOW_UPDATE increment to send now (0: none yet)."""
        self.consumed += nbytes
        consumed = self.consumed
        shut = self.available == 0 and consumed > min(1024, self.size // 4)
        if not shut and consumed < self.size // 2:
            return 0
        self.consumed = 0
        self.available += consumed
        return consumed
