"""A fake process layer for the arbiter: children, signals and a clock, all in memory.

Forking records a :class:`FakeChild`; a test makes it report ready (real bytes on the
real status pipe), beat (its heartbeat slot, at the fake time), exit with a code, or die
of a signal. Starting a program (the file watcher, a new master) records a child too,
with copies of the descriptors it would inherit, so a test can write its output.
SIGKILL kills at once, as it does in life; every other signal is only recorded. The
clock moves only when the arbiter waits with a timeout and nothing is pending: it jumps
to the end of the timeout, as if the time had passed (workers in ``ticking`` beat
then). Waiting forever with nothing pending raises, so a test that expects something to
happen finds out when nothing would.
"""

from __future__ import annotations

import os
import selectors
import signal
from contextlib import suppress
from dataclasses import dataclass, field

from preforkd.heartbeat import Beat
from preforkd.master.process import ProgramSpec, SelectResult
from preforkd.worker.main import DRAINING_MESSAGE, READY_MESSAGE, WorkerSpec


class WouldBlockForever(AssertionError):
    pass


@dataclass
class FakeChild:
    pid: int
    spec: WorkerSpec | None  # None for a program
    signals: list[int] = field(default_factory=list)
    returncode: int | None = None  # set once it has exited
    reaped: bool = False

    @property
    def alive(self) -> bool:
        return self.returncode is None

    @property
    def slot(self) -> int:
        assert self.spec is not None
        return self.spec.worker_id


@dataclass
class FakeProgram:
    pid: int
    spec: ProgramSpec
    fds: dict[int, int]  # the program's descriptor number -> our copy of it
    stdout: int | None  # our copy of its standard output

    def write(self, data: bytes) -> None:
        assert self.stdout is not None
        os.write(self.stdout, data)


class FakeProcesses:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now
        self.children: dict[int, FakeChild] = {}
        self.fork_error: OSError | None = None  # the next forks raise this
        self.private_fds: set[int] = set()
        self.ticking: set[int] = set()  # workers whose loop beats whenever time passes
        self.programs: dict[int, FakeProgram] = {}
        self._next_pid = 101

    # --- the Processes interface -----------------------------------------------------

    def fork_worker(self, spec: WorkerSpec) -> int:
        if self.fork_error is not None:
            raise self.fork_error
        pid = self._next_pid
        self._next_pid += 1
        self.children[pid] = FakeChild(pid, spec)
        return pid

    def spawn(self, spec: ProgramSpec) -> int:
        pid = self._next_pid
        self._next_pid += 1
        fds = {fd: os.dup(fd) for fd in spec.pass_fds}
        stdout = os.dup(spec.stdout) if spec.stdout is not None else None
        self.programs[pid] = FakeProgram(pid, spec, fds, stdout)
        self.children[pid] = FakeChild(pid, None)
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
        for pid in self.ticking:
            if self.children[pid].alive:
                self.beat(pid)
        return []

    # --- what tests do to children ---------------------------------------------------

    def report_ready(self, pid: int) -> None:
        os.write(self._spec(pid).notify_fd, READY_MESSAGE % pid)

    def report_draining(self, pid: int) -> None:
        os.write(self._spec(pid).notify_fd, DRAINING_MESSAGE % pid)

    def beat(self, pid: int, requests: int = 0) -> None:
        """The worker's loop ticks now (fake time)."""
        slot = self._spec(pid).heartbeat
        assert slot is not None
        slot.write(Beat(pid, self.now, requests, 0, 0, False))

    def _spec(self, pid: int) -> WorkerSpec:
        spec = self.children[pid].spec
        assert spec is not None
        return spec

    def exit(self, pid: int, code: int = 0) -> None:
        assert self.children[pid].alive
        self.children[pid].returncode = code

    def crash(self, pid: int, sig: int) -> None:
        assert self.children[pid].alive
        self.children[pid].returncode = -sig

    def alive(self) -> list[FakeChild]:
        """Workers that have not exited, by slot."""
        workers = (c for c in self.children.values() if c.alive and c.spec is not None)
        return sorted(workers, key=lambda c: c.slot)

    def pids(self) -> list[int]:
        return [c.pid for c in self.alive()]

    def forks(self) -> int:
        return sum(1 for c in self.children.values() if c.spec is not None)

    def close(self) -> None:
        for program in self.programs.values():
            for fd in [*program.fds.values(), program.stdout]:
                if fd is not None:
                    with suppress(OSError):
                        os.close(fd)
