"""A fake process layer for the arbiter: children, signals and a clock, all in memory.

Forking records a :class:`FakeChild`; a test makes it report ready (real bytes on the
real status pipe), exit with a code, or die of a signal. SIGKILL kills at once, as it
does in life; every other signal is only recorded. The clock moves only when the
arbiter waits with a timeout and nothing is pending: it jumps to the end of the
timeout, as if the time had passed. Waiting forever with nothing pending raises, so a
test that expects something to happen finds out when nothing would.
"""

from __future__ import annotations

import os
import selectors
import signal
from dataclasses import dataclass, field

from preforkd.master.process import SelectResult
from preforkd.worker.main import READY_MESSAGE, WorkerSpec


class WouldBlockForever(AssertionError):
    pass


@dataclass
class FakeChild:
    pid: int
    spec: WorkerSpec
    signals: list[int] = field(default_factory=list)
    returncode: int | None = None  # set once it has exited
    reaped: bool = False

    @property
    def alive(self) -> bool:
        return self.returncode is None

    @property
    def slot(self) -> int:
        return self.spec.worker_id


class FakeProcesses:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now
        self.children: dict[int, FakeChild] = {}
        self.fork_error: OSError | None = None  # the next forks raise this
        self._next_pid = 101

    # --- the Processes interface -----------------------------------------------------

    def fork_worker(self, spec: WorkerSpec) -> int:
        if self.fork_error is not None:
            raise self.fork_error
        pid = self._next_pid
        self._next_pid += 1
        self.children[pid] = FakeChild(pid, spec)
        return pid

    def kill(self, pid: int, sig: int) -> None:
        child = self.children[pid]
        assert not child.reaped, f"signal {sig} sent to reaped pid {pid}"
        child.signals.append(sig)
        if sig == signal.SIGKILL and child.alive:
            child.returncode = -signal.SIGKILL

    def reap(self) -> list[tuple[int, int]]:
        exited = []
        for child in self.children.values():
            if child.returncode is not None and not child.reaped:
                child.reaped = True
                exited.append((child.pid, child.returncode))
        return exited

    def monotonic(self) -> float:
        return self.now

    def wait(self, selector: selectors.BaseSelector, timeout: float | None) -> SelectResult:
        if any(c.returncode is not None and not c.reaped for c in self.children.values()):
            return []  # SIGCHLD would have woken the loop
        events = selector.select(0)
        if events or timeout == 0:
            return events
        if timeout is None:
            raise WouldBlockForever("the arbiter would wait forever")
        self.now += timeout
        return []

    # --- what tests do to children ---------------------------------------------------

    def report_ready(self, pid: int) -> None:
        os.write(self.children[pid].spec.notify_fd, READY_MESSAGE % pid)

    def exit(self, pid: int, code: int = 0) -> None:
        assert self.children[pid].alive
        self.children[pid].returncode = code

    def crash(self, pid: int, sig: int) -> None:
        assert self.children[pid].alive
        self.children[pid].returncode = -sig

    def alive(self) -> list[FakeChild]:
        """Children that have not exited, by slot."""
        return sorted((c for c in self.children.values() if c.alive), key=lambda c: c.slot)

    def pids(self) -> list[int]:
        return [c.pid for c in self.alive()]

    def forks(self) -> int:
        return len(self.children)
