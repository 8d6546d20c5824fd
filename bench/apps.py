"""The WSGI applications every server runs in the benchmark.

Each workload mounts one of these callables; the URL paths are fixed ("/", "/64k", "/echo",
"/sleep") so that ``application``, which routes on PATH_INFO, fits every workload too.

- ``hello``: 200 text/plain "Hello, world!" (13 bytes, Content-Length).
- ``big``: 200 application/octet-stream, a 64 KiB body as one bytes object.
- ``echo``: reads the whole request body from wsgi.input, answers its length.
- ``blocking``: sleeps 10 ms (a database call, say), then answers like ``hello``.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from typing import Any

StartResponse = Callable[..., Any]
Environ = dict[str, Any]

HELLO = b"Hello, world!"
HELLO_HEADERS = [("Content-Type", "text/plain"), ("Content-Length", str(len(HELLO)))]

BIG_SIZE = 64 * 1024
BIG = b"x" * BIG_SIZE
BIG_HEADERS = [("Content-Type", "application/octet-stream"), ("Content-Length", str(BIG_SIZE))]

READ_CHUNK = 64 * 1024  # what a typical framework asks wsgi.input for at a time
BLOCKING_SECONDS = 0.010


def hello(environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
    start_response("200 OK", HELLO_HEADERS)
    return [HELLO]


def big(environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
    start_response("200 OK", BIG_HEADERS)
    return [BIG]


def echo(environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
    stream = environ["wsgi.input"]
    total = 0
    # Without a Content-Length (HTTP/2 may omit it), read to the end of the stream.
    length = environ.get("CONTENT_LENGTH")
    remaining = int(length) if length else None
    while remaining is None or remaining > 0:
        want = READ_CHUNK if remaining is None else min(remaining, READ_CHUNK)
        chunk = stream.read(want)
        if not chunk:
            break
        total += len(chunk)
        if remaining is not None:
            remaining -= len(chunk)
    body = str(total).encode()
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]


def blocking(environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
    time.sleep(BLOCKING_SECONDS)
    return hello(environ, start_response)


_ROUTES = {"/64k": big, "/echo": echo, "/sleep": blocking}


def application(environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
    return _ROUTES.get(environ.get("PATH_INFO", "/"), hello)(environ, start_response)
