"""The DATA scheduler interface, and the first-come, first-served stand-in.

The connection frames response DATA in rounds: each round, every stream with data pending
is offered one quantum (16 KiB, or less as the windows allow), in the order the scheduler
gives. A stream that still has data pending after its turn moves to the back of the ready
order, so the stand-in is round-robin. RFC 9218 priorities (``priority.py``) plug in here:
a scheduler that orders lower urgency first and keeps incremental streams round-robin.

The interface, all the connection calls:

* ``open(stream_id, priority)``: a request arrived; ``priority`` is its ``priority`` field
  value (RFC 9218 §5), or None.
* ``update(stream_id, priority)``: a PRIORITY_UPDATE frame (RFC 9218 §7) for that stream;
  the field value as received.
* ``close(stream_id)``: the stream is over; forget it.
* ``order(ready)``: the stream ids of ``ready`` (the streams with data pending, oldest
  first) in the order they are offered a quantum this round; a stream left out waits.
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
