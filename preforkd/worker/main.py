"""A worker process's life, from the moment the master forks it.

Start-up checklist (order matters, see docs/architecture): reset signal dispositions,
set the process title, reseed random, apply umask and drop privileges, load the app,
create the event loop, serve on the inherited listeners, report "ready" to the master.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from preforkd.config import Config

WSGIApp = Callable[..., Any]

# The worker writes this line to the master's status pipe once it is serving. One line is
# far below PIPE_BUF, so concurrent writes from several workers never interleave.
READY_MESSAGE = b"ready %d\n"


@dataclass(frozen=True)
class WorkerSpec:
    """What the master hands a freshly forked worker."""

    worker_id: int  # slot number 1..N, reused when a worker is replaced
    cfg: Config
    listeners: tuple[socket.socket, ...]
    notify_fd: int  # write end of the master's status pipe
    master_pid: int
    app: WSGIApp | None = None  # the preloaded app (--preload), else loaded from cfg.app


def notify_ready(fd: int) -> None:
    os.write(fd, READY_MESSAGE % os.getpid())


def run_worker(spec: WorkerSpec) -> int:
    """Run a worker to completion in the forked child; returns its exit code."""
    raise NotImplementedError
