"""USR2: replace the master itself (new preforkd, new Python) without closing a port.

Sequence (old master A, new master B):

1. A receives USR2 and starts B = ``sys.executable -m preforkd <A's original arguments>``
   in A's original working directory and environment, plus
   ``PREFORKD_INTERNAL_UPGRADE`` (JSON: the listening sockets' descriptor numbers and
   unix socket paths, the write end of a pipe, A's binds and pid). The descriptors are
   passed with ``pass_fds``: B gets the *same* listening sockets, so the port is never
   closed and connections waiting in the backlog are accepted by whoever accepts next.
2. B reads its configuration as at any start, but adopts the inherited sockets instead
   of binding (a changed ``binds`` is reported and ignored), starts its workers, and
   does not write the pid file yet. Both generations of workers now accept.
3. Once B's workers are all ready, B writes the pid file (B's pid) and the line
   ``serving <pid>`` to the pipe.
4. A reads it and stops gracefully, like on TERM: its workers stop accepting and finish
   their requests. A removes neither the pid file (it holds B's pid) nor unix socket
   files (B serves them).

If B exits before step 3 (a broken new release, a bad configuration), A reaps it (B is
A's child), logs its exit code and keeps serving; the pid file still holds A's pid.
After A exits, B is re-parented to init (or to a subreaper such as systemd's): point
the supervisor at the pid file.
"""

from __future__ import annotations

import json
import logging
import os
import selectors
import sys
from collections.abc import MutableMapping, Sequence
from contextlib import suppress
from dataclasses import dataclass

from preforkd.config import Config
from preforkd.errors import BindError
from preforkd.master.process import Processes, ProgramSpec
from preforkd.master.reload import Origin
from preforkd.master.signals import Command, LineReader
from preforkd.master.sockets import FdAddress, Listener, format_address, inherit_fd

log = logging.getLogger("preforkd.master")

ENV_VAR = "PREFORKD_INTERNAL_UPGRADE"
INTERNAL_PREFIX = "PREFORKD_INTERNAL_"
SERVING_MESSAGE = b"serving %d\n"


@dataclass(frozen=True)
class InheritedSocket:
    fd: int
    unlink_path: str | None  # a unix socket file the last master to exit must remove


@dataclass(frozen=True)
class Inheritance:
    """What a master started by USR2 receives from its predecessor."""

    sockets: tuple[InheritedSocket, ...]
    notify_fd: int  # write "serving <pid>" here once all our workers are ready
    binds: tuple[str, ...]  # the predecessor's configured binds
    predecessor: int  # its pid
    # Its number of workers, when TTIN/TTOU changed it from --workers: kept across USR2.
    workers: int | None = None

    def encode(self) -> str:
        return json.dumps(
            {
                "sockets": [[s.fd, s.unlink_path] for s in self.sockets],
                "notify_fd": self.notify_fd,
                "binds": list(self.binds),
                "predecessor": self.predecessor,
                "workers": self.workers,
            }
        )

    @classmethod
    def decode(cls, text: str) -> Inheritance:
        """Raises BindError if ``text`` is not what :meth:`encode` writes."""
        try:
            data = json.loads(text)
            sockets = tuple(InheritedSocket(int(fd), path) for fd, path in data["sockets"])
            workers = data.get("workers")
            return cls(
                sockets,
                int(data["notify_fd"]),
                tuple(data["binds"]),
                int(data["predecessor"]),
                None if workers is None else int(workers),
            )
        except (ValueError, KeyError, TypeError) as exc:
            raise BindError(f"{ENV_VAR} is malformed ({exc}): {text!r}") from None


def take_inheritance(environ: MutableMapping[str, str]) -> Inheritance | None:
    """The inheritance passed in ``environ`` (removed from it), if this is a new master."""
    text = environ.pop(ENV_VAR, None)
    return None if text is None else Inheritance.decode(text)


def adopt_listeners(inheritance: Inheritance) -> list[Listener]:
    """The predecessor's listening sockets, as our own; raises BindError."""
    listeners: list[Listener] = []
    try:
        for inherited in inheritance.sockets:
            listener = inherit_fd(FdAddress(f"inherited fd {inherited.fd}", inherited.fd))
            listener.name = format_address(listener.sock)
            if inherited.unlink_path is not None:
                with suppress(OSError):
                    st = os.lstat(inherited.unlink_path)
                    listener.unlink_path = inherited.unlink_path
                    listener.unlink_id = (st.st_dev, st.st_ino)
            listeners.append(listener)
    except BaseException:
        for listener in listeners:
            listener.sock.detach()  # leave the descriptors to the predecessor's process
        raise
    return listeners


def check_binds(inheritance: Inheritance, binds: Sequence[str]) -> None:
    if tuple(binds) != inheritance.binds:
        log.warning(
            "USR2: binds changed (%s -> %s); the inherited sockets are kept, restart to "
            "change them",
            " ".join(inheritance.binds),
            " ".join(binds),
        )


def successor_program(
    origin: Origin,
    listeners: Sequence[Listener],
    notify_fd: int,
    binds: Sequence[str],
    workers: int | None = None,
) -> ProgramSpec:
    """How to start the new master (step 1 of the module docstring)."""
    sockets = tuple(InheritedSocket(lst.sock.fileno(), lst.unlink_path) for lst in listeners)
    inheritance = Inheritance(sockets, notify_fd, tuple(binds), os.getpid(), workers)
    env = {k: v for k, v in origin.environ.items() if not k.startswith(INTERNAL_PREFIX)}
    env[ENV_VAR] = inheritance.encode()
    return ProgramSpec(
        argv=(sys.executable, "-m", "preforkd", *origin.argv),
        env=env,
        cwd=origin.cwd,
        pass_fds=(*(s.fd for s in sockets), notify_fd),
        name="new master",
    )


def notify_predecessor(fd: int) -> None:
    """Step 3: tell the old master that we serve; it then stops."""
    try:
        os.write(fd, SERVING_MESSAGE % os.getpid())
    except OSError as exc:  # it is gone already: nothing to hand over
        log.info("USR2: could not notify the old master (%s)", exc.strerror or exc)
    finally:
        with suppress(OSError):
            os.close(fd)


class Successor:
    """The old master's view of the new one: its pid and the pipe it reports on."""

    def __init__(
        self, pid: int, read_fd: int, processes: Processes, selector: selectors.BaseSelector
    ) -> None:
        self.pid = pid
        self._reader: LineReader | None = LineReader(read_fd)
        self._processes = processes
        self._selector = selector
        processes.private_fds.add(read_fd)  # workers forked from now on close it
        selector.register(read_fd, selectors.EVENT_READ, self._read)

    @classmethod
    def start(
        cls,
        processes: Processes,
        selector: selectors.BaseSelector,
        origin: Origin,
        listeners: Sequence[Listener],
        cfg: Config,
        workers: int,
    ) -> Successor | None:
        """Start the new master; ``workers`` is our current count (TTIN/TTOU included)."""
        read_fd, write_fd = os.pipe()
        os.set_blocking(read_fd, False)
        kept = workers if workers != cfg.workers else None
        try:
            pid = processes.spawn(successor_program(origin, listeners, write_fd, cfg.binds, kept))
        except OSError as exc:
            log.error("USR2: cannot start a new master: %s", exc)
            os.close(read_fd)
            return None
        finally:
            os.close(write_fd)  # the new master holds the only write end now
        log.info("USR2: started a new master (pid %d) on the same listening sockets", pid)
        return cls(pid, read_fd, processes, selector)

    def _read(self) -> list[Command]:
        if self._reader is None:
            return []
        lines = self._reader.read_lines()
        commands = [
            Command("successor_serving", self.pid) for line in lines if line.startswith(b"serving")
        ]
        if self._reader.eof:
            self.close()
        return commands

    def exited(self, returncode: int) -> None:
        how = (
            f"exited with code {returncode}" if returncode >= 0 else f"died of signal {-returncode}"
        )
        log.error(
            "USR2: the new master (pid %d) %s before it served; this master carries on",
            self.pid,
            how,
        )
        self.close()

    def close(self) -> None:
        if self._reader is None:
            return
        fd, self._reader = self._reader.fd, None
        with suppress(KeyError, ValueError):
            self._selector.unregister(fd)
        self._processes.private_fds.discard(fd)  # the number may be reused for a keeper
        os.close(fd)
