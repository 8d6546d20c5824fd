"""probe's routes plus two that let a test see and steer a worker from outside.

- ``/slow?seconds=S&mark=PATH``: create the file PATH (the request has reached the app),
  then sleep S seconds: a test waits for the file instead of sleeping itself.
- ``/exit?code=N``: the worker process exits at once with code N, as after a crash.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable
from typing import Any
from urllib.parse import parse_qs

from probe import app as probe_app

NOT_CALLABLE = 42


def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    args = {k: v[-1] for k, v in parse_qs(environ.get("QUERY_STRING", "")).items()}
    path = environ["PATH_INFO"]
    if path == "/slow" and "mark" in args:
        with open(args["mark"], "w") as mark:
            mark.write(str(os.getpid()))
        time.sleep(float(args.get("seconds", "1")))
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"slow done"]
    if path == "/exit":
        os._exit(int(args.get("code", "0")))
    result: Iterable[bytes] = probe_app(environ, start_response)
    return result
