"""Routes that get a worker stuck, for the --timeout and --request-timeout tests.

- ``/block?seconds=S``: hold the GIL in C for S seconds, the way a stuck C extension
  does: ``ctypes.PyDLL`` calls libc's ``sleep()`` *without* releasing the GIL, so no
  other thread of the worker runs, its event loop included, and its heartbeat stops.
  (Sending itself SIGSTOP would stop the loop too, but a stopped process cannot run
  the SIGABRT handler that dumps the stacks; this way the dump can be checked.)
- ``/sleep?seconds=S&mark=PATH``: create PATH (the request is in the app), then sleep
  S seconds in the app thread; the event loop runs on: a slow request.
- anything else: the worker's pid.
"""

from __future__ import annotations

import ctypes
import os
import time
from collections.abc import Callable, Iterable
from typing import Any
from urllib.parse import parse_qs


def hold_the_gil(seconds: int) -> None:
    ctypes.PyDLL(None).sleep(seconds)


def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    args = {k: v[-1] for k, v in parse_qs(environ.get("QUERY_STRING", "")).items()}
    path = environ["PATH_INFO"]
    if path == "/block":
        hold_the_gil(int(args.get("seconds", "20")))
    elif path == "/sleep":
        with open(args["mark"], "w") as mark:
            mark.write(str(os.getpid()))
        time.sleep(float(args.get("seconds", "20")))
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [str(os.getpid()).encode()]
