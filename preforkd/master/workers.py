"""The master's table of worker processes.

A worker has a *slot* number 1..N, shown in its process title and in the logs. A
replacement takes the slot of the worker it replaces: the lowest slot not held by a
live worker of the same generation. A worker keeps its slot until it is reaped, also
while it drains after being asked to stop.

The *generation* is the configuration epoch the worker was started for. There is only
generation 1 today; a reload (HUP) will start generation 2 next to it and retire the
old workers once the new ones are ready, which is why slots are per generation.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass


@dataclass
class Worker:
    slot: int
    pid: int
    generation: int
    started: float  # monotonic time of the fork
    ready: bool = False  # it reported "ready" on the status pipe
    stop_signal: int | None = None  # the signal sent to ask it to stop (TERM or QUIT)
    stop_deadline: float | None = None  # when it gets SIGKILL if still alive
    killed: bool = False  # we sent SIGKILL

    @property
    def stopping(self) -> bool:
        return self.stop_signal is not None

    @property
    def label(self) -> str:
        return f"worker {self.slot} (pid {self.pid})"


class WorkerTable:
    """Live (not yet reaped) workers, by pid."""

    def __init__(self) -> None:
        self._by_pid: dict[int, Worker] = {}

    def __len__(self) -> int:
        return len(self._by_pid)

    def __iter__(self) -> Iterator[Worker]:
        return iter(list(self._by_pid.values()))

    def add(self, worker: Worker) -> None:
        self._by_pid[worker.pid] = worker

    def get(self, pid: int) -> Worker | None:
        return self._by_pid.get(pid)

    def pop(self, pid: int) -> Worker | None:
        return self._by_pid.pop(pid, None)

    def active(self, generation: int) -> list[Worker]:
        """Workers of this generation not asked to stop, by slot."""
        found = [w for w in self if w.generation == generation and not w.stopping]
        return sorted(found, key=lambda w: w.slot)

    def free_slot(self, generation: int) -> int:
        taken = {w.slot for w in self if w.generation == generation}
        slot = 1
        while slot in taken:
            slot += 1
        return slot

    def kill_deadlines(self) -> list[float]:
        return [w.stop_deadline for w in self if w.stop_deadline is not None and not w.killed]

    def overdue(self, now: float) -> list[Worker]:
        """Workers asked to stop whose deadline has passed, not yet killed."""
        return [
            w
            for w in self
            if w.stop_deadline is not None and not w.killed and now >= w.stop_deadline
        ]
