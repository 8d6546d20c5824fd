"""The master's reading of the heartbeat table (preforkd.heartbeat).

A worker shows a sign of life when it is forked, then at every tick of its event loop.
Its *silence* is the time since its last sign; ``--timeout`` bounds it, for a booting
worker (a hung import) as for a serving one (a blocked event loop). Workers asked to
stop are not watched: their stop deadline bounds them.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

from preforkd.heartbeat import Beat, HeartbeatSlot, HeartbeatTable
from preforkd.master.workers import Worker, WorkerTable

log = logging.getLogger("preforkd.master")

# Between SIGABRT (the worker dumps its threads' stacks and dies) and SIGKILL, for a
# worker that could not run its handler (stopped, or stuck in the kernel).
ABORT_GRACE = 1.0


class HeartbeatMonitor:
    """Hands out heartbeat slots and measures each worker's silence."""

    def __init__(self, table: HeartbeatTable | None) -> None:
        self.table = table  # None: no supervision by heartbeat (most arbiter tests)

    def free_index(self, workers: WorkerTable) -> int | None:
        """A slot index for a new worker; -1 without a table; None when all are taken."""
        if self.table is None:
            return -1
        return workers.free_beat(self.table.capacity)

    def slot(self, index: int) -> HeartbeatSlot | None:
        """The slot at ``index``, cleared of its previous owner's record."""
        if self.table is None or index < 0:
            return None
        slot = self.table.slot(index)
        slot.clear()
        return slot

    def beat(self, worker: Worker) -> Beat | None:
        """The worker's last record (None if it has written none)."""
        if self.table is None or worker.beat < 0:
            return None
        beat = self.table.slot(worker.beat).read()
        return beat if beat is not None and beat.pid == worker.pid else None

    def last_sign(self, worker: Worker) -> float:
        beat = self.beat(worker)
        return max(worker.started, beat.tick if beat is not None else 0.0)

    def watched(self, workers: Iterable[Worker], timeout: float) -> list[Worker]:
        if self.table is None or timeout <= 0:
            return []
        return [w for w in workers if not w.stopping]

    def deadlines(self, workers: Iterable[Worker], timeout: float) -> list[float]:
        return [self.last_sign(w) + timeout for w in self.watched(workers, timeout)]

    def silent(self, workers: Iterable[Worker], timeout: float, now: float) -> list[Worker]:
        """Workers silent for ``timeout`` or longer; each is logged, to be aborted."""
        found = []
        for worker in self.watched(workers, timeout):
            silence = now - self.last_sign(worker)
            if silence >= timeout:
                what = "its event loop has not run" if worker.ready else "it has not become ready"
                log.error(
                    "%s is silent: %s for %.1fs (--timeout %gs); sending SIGABRT (its threads' "
                    "stacks go to the error log), then SIGKILL in %gs",
                    worker.label, what, silence, timeout, ABORT_GRACE,
                )  # fmt: skip
                found.append(worker)
        return found
