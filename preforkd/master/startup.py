"""Start-up chores of the master: user and group ids, the pid file, the process
title, preloading the application, and the no-threads-before-fork check."""

from __future__ import annotations

import grp
import logging
import os
import pwd
import tempfile
import threading
from collections.abc import Callable
from contextlib import suppress
from dataclasses import dataclass, field

from preforkd.config import Config
from preforkd.errors import ConfigError
from preforkd.heartbeat import HeartbeatTable
from preforkd.loading import load_app
from preforkd.logs import reopen_log_files
from preforkd.master.control import ControlSocket
from preforkd.master.endpoint import Endpoint
from preforkd.master.notify import Notifier
from preforkd.master.reload import Origin
from preforkd.worker.main import WSGIApp

log = logging.getLogger("preforkd.master")


@dataclass(frozen=True)
class Credentials:
    """The ids workers switch to after fork (None: keep the master's)."""

    uid: int | None = None
    gid: int | None = None


@dataclass
class Context:
    """What the arbiter gets besides its config; the tests leave most of it out."""

    app: WSGIApp | None = None  # preloaded (--preload) for the first generation
    credentials: Credentials = field(default_factory=Credentials)
    origin: Origin | None = None  # how we were started: needed by reload and USR2
    heartbeats: HeartbeatTable | None = None  # None: no --timeout supervision
    on_serving: Callable[[], None] | None = None  # called once all workers are first ready
    notifier: Notifier = field(default_factory=Notifier.disabled)  # systemd (sd_notify)
    workers: int | None = None  # after USR2: the old master's count, if TTIN/TTOU changed it
    control: ControlSocket | None = None  # --control-socket
    metrics: Endpoint | None = None  # --metrics-bind

    def endpoints(self) -> list[Endpoint]:
        """The sockets the master serves besides its pipes."""
        found = [] if self.control is None else [self.control.endpoint]
        return found if self.metrics is None else [*found, self.metrics]


def resolve_credentials(user: str | None, group: str | None) -> Credentials:
    """Resolve --user/--group (names or numeric ids); raises ConfigError.

    With --user alone, the group is the user's primary group (when the user is known).
    A process that is not root can only "switch" to its own ids.
    """
    uid = gid = None
    if user is not None:
        uid, gid = _lookup_user(user)
    if group is not None:
        gid = _lookup_group(group)
    if os.geteuid() != 0:
        if uid is not None and uid != os.geteuid():
            raise ConfigError(f"--user {user}: switching user needs root privileges")
        if group is not None and gid not in (os.getgid(), os.getegid()):
            raise ConfigError(f"--group {group}: switching group needs root privileges")
        if group is None:
            gid = None
    return Credentials(uid, gid)


def _lookup_user(user: str) -> tuple[int, int | None]:
    try:
        entry = pwd.getpwuid(int(user)) if user.isdigit() else pwd.getpwnam(user)
    except KeyError:
        if user.isdigit():
            return int(user), None  # a uid without a passwd entry is fine (containers)
        raise ConfigError(f"--user {user}: no such user") from None
    return entry.pw_uid, entry.pw_gid


def _lookup_group(group: str) -> int:
    if group.isdigit():
        return int(group)
    try:
        return grp.getgrnam(group).gr_gid
    except KeyError:
        raise ConfigError(f"--group {group}: no such group") from None


class PidFile:
    """The master's pid, written atomically; removed only if it still holds our pid."""

    def __init__(self, path: str, umask: int) -> None:
        self.path = os.path.abspath(path)  # immune to a later chdir
        self.umask = umask
        self.pid = os.getpid()

    def write(self) -> None:
        """Raises OSError."""
        fd, tmp = tempfile.mkstemp(dir=os.path.dirname(self.path), prefix=".preforkd-pid")
        try:
            with os.fdopen(fd, "w") as file:
                os.fchmod(file.fileno(), 0o666 & ~self.umask)
                file.write(f"{self.pid}\n")
            os.replace(tmp, self.path)
        except BaseException:
            with suppress(OSError):
                os.unlink(tmp)
            raise

    def remove(self) -> None:
        try:
            with open(self.path) as file:
                if int(file.read().strip() or 0) != self.pid:
                    return  # another process owns it now
            os.unlink(self.path)
        except (OSError, ValueError):
            pass


def set_title(title: str) -> None:
    from setproctitle import setproctitle

    setproctitle(title)


def preload_app(cfg: Config) -> WSGIApp:
    """Load the application in the master (--preload); raises AppLoadError."""
    return load_app(cfg.app, chdir=cfg.chdir, pythonpath=cfg.pythonpath)


def reopen_master_logs() -> None:
    """USR1 in the master: reopen the log files (the workers get the signal too)."""
    try:
        reopen_log_files()
    except Exception:
        log.exception("USR1: could not reopen the log files")
    else:
        log.info("USR1: log files reopened")


def other_threads() -> list[str]:
    """Names of the threads other than the main one (there must be none at fork)."""
    main = threading.main_thread()
    return [t.name for t in threading.enumerate() if t is not main]
