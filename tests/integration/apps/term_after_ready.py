"""probe's app, plus a hook that sends SIGTERM to the worker right after it has told the
master it is ready: the moment a TERM from the master (stop, TTOU) may arrive.

Only the first worker does it (it writes its pid to the PFD_TEST_TERM_MARK file), so
its replacement serves normally. White-box: it wraps
preforkd.worker.main.notify_ready, which the worker calls once it is serving.
"""

from __future__ import annotations

import os
import signal

from probe import app, application

from preforkd.worker import main as worker_main

__all__ = ["app", "application"]

_mark = os.environ.get("PFD_TEST_TERM_MARK")
_notify_ready = worker_main.notify_ready


def _notify_ready_then_term(fd: int) -> None:
    _notify_ready(fd)
    if not _mark:
        return
    try:  # the claim file stays: later workers find it and serve normally
        os.close(os.open(_mark + ".claimed", os.O_WRONLY | os.O_CREAT | os.O_EXCL))
    except FileExistsError:
        return
    with open(_mark + ".tmp", "w") as fh:
        fh.write(str(os.getpid()))
    os.rename(_mark + ".tmp", _mark)  # the test sees the file complete, with our pid
    os.kill(os.getpid(), signal.SIGTERM)


worker_main.notify_ready = _notify_ready_then_term
