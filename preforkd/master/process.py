"""What the arbiter does to the operating system, behind a small interface.

The arbiter only forks workers, starts programs (the file watcher, a new master on
USR2), signals, reaps, reads the clock and waits; :class:`Processes` names those
operations. :class:`OSProcesses` performs them for real; the tests use a fake that
records children, lets a test make them exit or report ready, and moves a fake clock
(tests/master/fakes.py).

Fork safety: the master must hold no threads when it forks (a lock held by another
thread at fork time stays locked forever in the child; Python 3.12+ warns). The master
is single-threaded by design; ``preforkd.master.startup.other_threads`` is checked
before the first fork, and the file watcher (which needs threads) lives in its own
process.
"""

from __future__ import annotations

import os
import selectors
import subprocess
import sys
import time
import traceback
from collections.abc import Iterable, Mapping
from contextlib import suppress
from dataclasses import dataclass, field
from typing import NoReturn, Protocol

from preforkd.errors import EXIT_FAILURE
from preforkd.master.signals import reset_signals_in_child
from preforkd.worker.main import WorkerSpec, run_worker

SelectResult = list[tuple[selectors.SelectorKey, int]]


@dataclass(frozen=True)
class ProgramSpec:
    """A program the master starts with fork + exec (never a bare fork of itself)."""

    argv: tuple[str, ...]
    env: Mapping[str, str]
    cwd: str
    pass_fds: tuple[int, ...] = ()  # kept open, at the same numbers; all others closed
    stdout: int | None = None  # a descriptor for its standard output (None: inherit)
    name: str = field(default="", compare=False)  # for messages


class Processes(Protocol):
    # Descriptors of the master that a forked worker closes at once (the arbiter adds
    # the ones it opens later: the watcher's pipe, the upgrade pipe).
    private_fds: set[int]

    def fork_worker(self, spec: WorkerSpec) -> int:
        """Start a worker for ``spec``; return its pid. Raises OSError if fork fails."""
        ...

    def spawn(self, spec: ProgramSpec) -> int:
        """Start a program as a child; return its pid. Raises OSError."""
        ...

    def kill(self, pid: int, sig: int) -> None:
        """Send ``sig`` to a child that has not been reaped yet."""
        ...

    def reap(self) -> list[tuple[int, int]]:
        """Every child that has exited, as (pid, returncode); never blocks.

        returncode follows subprocess: the exit code, or -N if killed by signal N.
        """
        ...

    def monotonic(self) -> float: ...

    def wait(self, selector: selectors.BaseSelector, timeout: float | None) -> SelectResult:
        """Wait until a registered fd is readable or ``timeout`` passes (None: forever).

        A signal (SIGCHLD included) ends the wait through the signal wake-up fd.
        """
        ...


class OSProcesses:
    """The real thing: os.fork, os.kill, os.waitpid, time.monotonic, select."""

    def __init__(
        self, close_in_child: Iterable[int] = (), stale_modules: Iterable[str] = ()
    ) -> None:
        self.private_fds = set(close_in_child)
        # Modules the master preloaded: a worker that must load fresh code (a generation
        # after a reload, spec.app None) forgets them before it imports the app.
        self._stale_modules = tuple(stale_modules)
        self._programs: dict[int, subprocess.Popen[bytes]] = {}

    def fork_worker(self, spec: WorkerSpec) -> int:
        pid = os.fork()
        if pid == 0:
            self._be_worker(spec)
        return pid

    def _be_worker(self, spec: WorkerSpec) -> NoReturn:
        """The child's whole life: it never returns into the master's stack."""
        code = EXIT_FAILURE
        try:
            reset_signals_in_child()
            for fd in self.private_fds:
                with suppress(OSError):
                    os.close(fd)
            if spec.app is None:
                forget_modules(self._stale_modules)
            code = run_worker(spec)
        except SystemExit as exc:
            code = _exit_status(exc.code)
        except BaseException:
            with suppress(BaseException):
                traceback.print_exc()
        finally:
            for stream in (sys.stdout, sys.stderr):
                with suppress(BaseException):
                    stream.flush()
            os._exit(code)

    def spawn(self, spec: ProgramSpec) -> int:
        # subprocess forks and execs at once: nothing of this process runs in the child.
        program = subprocess.Popen(
            list(spec.argv),
            env=dict(spec.env),
            cwd=spec.cwd,
            pass_fds=spec.pass_fds,
            stdin=subprocess.DEVNULL,
            stdout=spec.stdout,
        )
        self._programs[program.pid] = program
        return program.pid

    def kill(self, pid: int, sig: int) -> None:
        with suppress(ProcessLookupError):
            os.kill(pid, sig)

    def reap(self) -> list[tuple[int, int]]:
        exited = []
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                break
            if pid == 0:
                break
            returncode = os.waitstatus_to_exitcode(status)
            program = self._programs.pop(pid, None)
            if program is not None:
                program.returncode = returncode  # reaped here, not by subprocess
            exited.append((pid, returncode))
        return exited

    def monotonic(self) -> float:
        return time.monotonic()

    def wait(self, selector: selectors.BaseSelector, timeout: float | None) -> SelectResult:
        return selector.select(timeout)


def forget_modules(names: Iterable[str]) -> None:
    """Remove pure-Python modules from sys.modules, so that the next import runs the
    code on disk again. Extension modules stay: they cannot be unloaded, and many refuse
    to be initialised twice in one process."""
    for name in names:
        module = sys.modules.get(name)
        if module is not None and not _is_extension(module):
            del sys.modules[name]


def _is_extension(module: object) -> bool:
    import importlib.machinery

    loader = getattr(module, "__loader__", None)
    if isinstance(loader, importlib.machinery.ExtensionFileLoader):
        return True
    origin = getattr(getattr(module, "__spec__", None), "origin", None) or ""
    return origin.endswith(tuple(importlib.machinery.EXTENSION_SUFFIXES))


def _exit_status(code: object) -> int:
    """The exit status sys.exit(code) would give."""
    if code is None:
        return 0
    if isinstance(code, int):
        return code & 0xFF
    with suppress(BaseException):
        print(code, file=sys.stderr)
    return EXIT_FAILURE
