"""The master's inputs: signals and the workers' status pipe, both turned into commands.

Theory of operation. The arbiter has one queue of :class:`Command`. Two things feed it:

* Signal handlers. A handler does exactly one thing, ``SimpleQueue.put`` (which is safe
  to call from a handler); no logging, no locks. ``signal.set_wakeup_fd`` on a
  non-blocking pipe makes the C-level handler also write a byte there, so a signal that
  arrives while the loop waits in ``select()`` wakes it, and one that arrives just
  before the wait leaves the byte behind and the wait returns at once. SIGCHLD has a
  handler that does nothing: it is there only for that wake-up.
* The status pipe, shared by all workers: each writes ``ready <pid>\\n`` once serving,
  and ``draining <pid>\\n`` when it begins a graceful stop of its own accord
  (--max-requests, --request-timeout). One short line is below PIPE_BUF, so lines
  never interleave. The loop reads it when readable and turns each line into a command.

(The file watcher and a new master started by USR2 have pipes of their own, read the
same way: see preforkd.master.watcher and preforkd.master.upgrade.)
"""

from __future__ import annotations

import logging
import os
import re
import signal
from contextlib import suppress
from dataclasses import dataclass
from queue import SimpleQueue
from types import FrameType
from typing import Any

log = logging.getLogger("preforkd.master")


@dataclass(frozen=True)
class Command:
    """One thing for the arbiter to do: dispatched to ``Arbiter.handle_<name>``."""

    name: str
    pid: int = 0  # the worker concerned ("ready", "draining")
    detail: str = ""  # e.g. the files that changed ("changed")


# What each signal asks of the master; see preforkd.master.arbiter for the behaviour.
SIGNAL_COMMANDS: dict[signal.Signals, str] = {
    signal.SIGTERM: "term",
    signal.SIGINT: "int",
    signal.SIGQUIT: "quit",
    signal.SIGHUP: "hup",
    signal.SIGUSR1: "usr1",
    signal.SIGUSR2: "usr2",
    signal.SIGTTIN: "ttin",
    signal.SIGTTOU: "ttou",
}
WAKE_ONLY_SIGNALS = (signal.SIGCHLD,)

_STATUS_LINE = re.compile(rb"^(ready|draining) (\d+)$")


def signal_command(signum: int) -> Command:
    return Command(SIGNAL_COMMANDS[signal.Signals(signum)])


class SignalHandlers:
    """Install (and later restore) the master's signal handlers and wake-up fd."""

    def __init__(self, commands: SimpleQueue[Command], wakeup_fd: int) -> None:
        self._commands = commands
        self._wakeup_fd = wakeup_fd
        self._saved: dict[signal.Signals, Any] = {}
        self._saved_wakeup_fd = -1

    def install(self) -> None:
        for sig in SIGNAL_COMMANDS:
            self._saved[sig] = signal.signal(sig, self._on_signal)
        for sig in WAKE_ONLY_SIGNALS:
            self._saved[sig] = signal.signal(sig, _wake_only)
        self._saved_wakeup_fd = signal.set_wakeup_fd(self._wakeup_fd, warn_on_full_buffer=False)

    def restore(self) -> None:
        signal.set_wakeup_fd(self._saved_wakeup_fd)
        for sig, handler in self._saved.items():
            signal.signal(sig, signal.SIG_DFL if handler is None else handler)
        self._saved.clear()

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        self._commands.put(signal_command(signum))  # nothing else: we are in a handler


def _wake_only(signum: int, frame: FrameType | None) -> None:
    """SIGCHLD: the wake-up fd byte is the whole point; the loop reaps anyway."""


def reset_signals_in_child() -> None:
    """In a freshly forked worker: forget the master's handlers and wake-up fd.

    The worker installs its own handlers later; until then signals have their default
    effect, and none of them writes into the master's wake-up pipe.
    """
    signal.set_wakeup_fd(-1)
    for sig in (*SIGNAL_COMMANDS, *WAKE_ONLY_SIGNALS):
        signal.signal(sig, signal.SIG_DFL)


class MasterPipes:
    """The signal wake-up pipe and the workers' status pipe."""

    def __init__(self) -> None:
        self.wakeup_r, self.wakeup_w = os.pipe()
        self.status_r, self.status_w = os.pipe()
        for fd in (self.wakeup_r, self.wakeup_w, self.status_r):
            os.set_blocking(fd, False)
        self._partial = b""

    def private_fds(self) -> tuple[int, ...]:
        """Descriptors a worker must close: all but the status pipe's write end."""
        return (self.wakeup_r, self.wakeup_w, self.status_r)

    def drain_wakeup(self) -> list[Command]:
        """Empty the wake-up pipe; the handlers have already queued the commands."""
        while _read_some(self.wakeup_r):
            pass
        return []

    def read_status(self) -> list[Command]:
        """Every complete status line available now, as commands."""
        while chunk := _read_some(self.status_r):
            self._partial += chunk
        *lines, self._partial = self._partial.split(b"\n")
        commands = []
        for line in lines:
            match = _STATUS_LINE.match(line.strip())
            if match:
                commands.append(Command(match[1].decode(), int(match[2])))
            else:
                log.warning("ignoring unexpected status line from a worker: %r", line)
        return commands

    def close(self) -> None:
        for fd in (self.wakeup_r, self.wakeup_w, self.status_r, self.status_w):
            with suppress(OSError):
                os.close(fd)


class LineReader:
    """Complete lines from a non-blocking pipe, whatever the size of each read."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.eof = False
        self._partial = b""

    def read_lines(self) -> list[bytes]:
        while True:
            try:
                chunk = os.read(self.fd, 65536)
            except (BlockingIOError, InterruptedError):
                break
            if not chunk:
                self.eof = True
                break
            self._partial += chunk
        *lines, self._partial = self._partial.split(b"\n")
        return lines


def _read_some(fd: int) -> bytes:
    try:
        return os.read(fd, 65536)
    except (BlockingIOError, InterruptedError):
        return b""
