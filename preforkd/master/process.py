"""What the arbiter does to the operating system, behind a small interface.

The arbiter only forks, signals, reaps, reads the clock and waits; :class:`Processes`
names those five operations. :class:`OSProcesses` performs them for real; the tests
use a fake that records children, lets a test make them exit or report ready, and
moves a fake clock (tests/master/fakes.py).

Fork safety: the master must hold no threads when it forks (a lock held by another
thread at fork time stays locked forever in the child; Python 3.12+ warns). The master
is single-threaded by design; ``preforkd.master.startup.other_threads`` is checked
before the first fork, and the file watcher (which needs threads) lives in its own
process.
"""

from __future__ import annotations

import os
import selectors
import sys
import time
import traceback
from collections.abc import Iterable
from contextlib import suppress
from typing import NoReturn, Protocol

from preforkd.errors import EXIT_FAILURE
from preforkd.master.signals import reset_signals_in_child
from preforkd.worker.main import WorkerSpec, run_worker

SelectResult = list[tuple[selectors.SelectorKey, int]]


class Processes(Protocol):
    def fork_worker(self, spec: WorkerSpec) -> int:
        """Start a worker for ``spec``; return its pid. Raises OSError if fork fails."""
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

    def __init__(self, close_in_child: Iterable[int] = ()) -> None:
        self._close_in_child = tuple(close_in_child)

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
            for fd in self._close_in_child:
                with suppress(OSError):
                    os.close(fd)
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
            exited.append((pid, os.waitstatus_to_exitcode(status)))
        return exited

    def monotonic(self) -> float:
        return time.monotonic()

    def wait(self, selector: selectors.BaseSelector, timeout: float | None) -> SelectResult:
        return selector.select(timeout)


def _exit_status(code: object) -> int:
    """The exit status sys.exit(code) would give."""
    if code is None:
        return 0
    if isinstance(code, int):
        return code & 0xFF
    with suppress(BaseException):
        print(code, file=sys.stderr)
    return EXIT_FAILURE
