"""The DATA scheduler interface, and a first-come, first-served stand-in.

The connection frames response DATA one quantum (16 KiB, or less as the windows allow) at
a time: it asks the scheduler for the order of the streams with data pending, and offers
the quantum to each in turn until one can send (its windows may hold it). A stream that
still has data pending after its turn moves to the back of the ready order, and the order
is asked again. The connection's default is ``priority.PriorityScheduler`` (RFC 9218);
``FifoScheduler`` serves the ready order as it is, which is round-robin.

The interface, all the connection calls:

* ``open(stream_id, priority)``: a request arrived; ``priority`` is its ``priority`` field
  value (RFC 9218 §5; several lines joined with ", "), or None.
* ``update(stream_id, priority)``: a PRIORITY_UPDATE frame (RFC 9218 §7) for an open or
  an idle stream; the field value as received. May raise ``H2ProtocolError`` (§7.1).
* ``close(stream_id)``: the stream is over, or was refused; forget it.
* ``order(ready)``: the stream ids of ``ready`` (the streams with data pending, least
  recently served first) in the order they are offered the next quantum; a stream left
  out waits.
* ``keeps_turn(stream_id)``: after a quantum of this stream (moved to the back of the ready
  order), it would still come first and the others' order would not change: the
  connection then goes on sending it without asking for the order again (a large
  response costs one ``order`` call, not one per 16 KiB).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Protocol

__all__ = ["FifoScheduler", "Scheduler"]


class Scheduler(Protocol):
    def open(self, stream_id: int, priority: bytes | None) -> None: ...

    def update(self, stream_id: int, priority: bytes) -> None: ...

    def close(self, stream_id: int) -> None: ...

    def order(self, ready: Sequence[int]) -> Iterable[int]: ...

    def keeps_turn(self, stream_id: int) -> bool: ...


class FifoScheduler:
    """Every stream alike: the ready order, oldest first (round-robin between rounds)."""

    __slots__ = ()

    def open(self, stream_id: int, priority: bytes | None) -> None:
        pass

    def update(self, stream_id: int, priority: bytes) -> None:
        pass

    def close(self, stream_id: int) -> None:
        pass

    def order(self, ready: Sequence[int]) -> Iterable[int]:
        return ready

    def keeps_turn(self, stream_id: int) -> bool:
        return False  # round-robin: every quantum moves the stream to the back
