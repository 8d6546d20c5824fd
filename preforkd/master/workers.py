"""The master's table of worker processes.

A worker has a *slot* number 1..N, shown in its process title and in the logs. A
replacement takes the slot of the worker it replaces: the lowest slot not held by a
live worker of the same generation. A worker keeps its slot until it is reaped, also
while it drains after being asked to stop.

The *generation* is the configuration (and code) epoch the worker was started for. A
reload (HUP) starts generation N+1 next to generation N and retires the old workers
once the new ones are ready, which is why slots are per generation.

A worker also has a *beat*: its index in the heartbeat table, unique among live
workers whatever their generation.
"""

from __future__ import annotations

import enum
import logging
import signal
from collections.abc import Iterator
from dataclasses import dataclass

from preforkd import errors
from preforkd.config import Config

log = logging.getLogger("preforkd.master")


class Phase(enum.Enum):
    BOOTING = "booting"  # the first generation's worker 1 alone, until it is ready
    RUNNING = "running"
    STOPPING = "stopping"  # no more forks; done when no worker is left


@dataclass(frozen=True)
class Fallback:
    """The generation that serves while a newer one boots."""

    generation: int
    cfg: Config
    target: int


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
    beat: int = -1  # its slot in the heartbeat table (-1: none)
    aborted: bool = False  # sent SIGABRT because its event loop was silent
    reopen_pending: bool = False  # USR1 arrived before it was ready: forward it then
    retire_reason: str = ""  # why we asked it to stop, if to replace it (metrics)

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

    def ready_count(self, generation: int) -> int:
        return sum(1 for w in self.active(generation) if w.ready)

    def free_beat(self, capacity: int) -> int | None:
        """The lowest heartbeat slot no live worker holds, or None if all are taken."""
        taken = {w.beat for w in self}
        return next((i for i in range(capacity) if i not in taken), None)

    def kill_deadlines(self) -> list[float]:
        return [w.stop_deadline for w in self if w.stop_deadline is not None and not w.killed]

    def overdue(self, now: float) -> list[Worker]:
        """Workers asked to stop whose deadline has passed, not yet killed."""
        return [
            w
            for w in self
            if w.stop_deadline is not None and not w.killed and now >= w.stop_deadline
        ]


def boot_failure(worker: Worker, returncode: int) -> str:
    if returncode == errors.WORKER_EXIT_APP_LOAD_ERROR:
        return f"{worker.label}: the application failed to load (see its traceback above)"
    if returncode == errors.WORKER_EXIT_BOOT_ERROR:
        return f"{worker.label} failed to boot"
    if worker.aborted:
        return f"{worker.label} did not become ready within --timeout"
    return describe_exit(worker.label, returncode)


def describe_exit(label: str, returncode: int) -> str:
    """'worker 2 (pid 123) exited with code 1', '... was killed by signal SIGSEGV'."""
    if returncode >= 0:
        return f"{label} exited with code {returncode}"
    try:
        name = signal.Signals(-returncode).name
    except ValueError:
        name = str(-returncode)
    text = f"{label} was killed by signal {name}"
    if -returncode == signal.SIGKILL:
        text += " (perhaps out of memory?)"
    return text


def log_exit(worker: Worker, returncode: int) -> None:
    if worker.aborted and returncode in (-signal.SIGKILL, -signal.SIGABRT):
        log.warning("%s was killed: its event loop was blocked", worker.label)
    elif worker.killed and returncode == -signal.SIGKILL:
        log.warning("%s was killed after its stop deadline", worker.label)
    elif worker.stopping and returncode in (0, -(worker.stop_signal or 0)):
        log.info("%s stopped", worker.label)
    elif returncode == 0:
        log.info("%s exited with code 0", worker.label)
    else:
        log.error("%s", describe_exit(worker.label, returncode))
