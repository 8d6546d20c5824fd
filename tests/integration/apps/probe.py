"""A plain-WSGI application whose routes exercise the server's behaviour from outside."""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any
from urllib.parse import parse_qs

Environ = dict[str, Any]
StartResponse = Callable[..., Any]

# Requests that went through close(), so tests can check it was called (per worker).
CLOSED: list[str] = []
_lock = threading.Lock()
_inside = _most_inside = 0  # requests in /concurrent now, and at most (per worker)


def _args(environ: Environ) -> dict[str, str]:
    return {k: v[-1] for k, v in parse_qs(environ.get("QUERY_STRING", "")).items()}


def _text(start_response: StartResponse, body: bytes, status: str = "200 OK",
          headers: list[tuple[str, str]] | None = None) -> list[bytes]:  # fmt: skip
    start_response(status, [("Content-Type", "text/plain"), *(headers or [])])
    return [body]


class Tracked:
    """A response iterable that records its close() call."""

    def __init__(self, chunks: Iterable[bytes], name: str) -> None:
        self.chunks = chunks
        self.name = name

    def __iter__(self) -> Iterator[bytes]:
        return iter(self.chunks)

    def close(self) -> None:
        with _lock:
            CLOSED.append(self.name)


def app(environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
    path = environ["PATH_INFO"]
    args = _args(environ)
    if path in ("/", "/hello"):
        return _text(start_response, b"hello")
    if path == "/pid":
        return _text(start_response, str(os.getpid()).encode())
    if path == "/echo":
        body = environ["wsgi.input"].read()
        return _text(start_response, body)
    if path == "/count":
        # Reads the body in small pieces, slowly if asked: backpressure on uploads.
        delay = float(args.get("delay", 0))
        total = 0
        while chunk := environ["wsgi.input"].read(65536):
            total += len(chunk)
            if delay:
                time.sleep(delay)
        return _text(start_response, str(total).encode())
    if path == "/lines":
        lines = list(environ["wsgi.input"])
        return _text(start_response, str(len(lines)).encode())
    if path == "/environ":
        data = {k: v for k, v in environ.items() if isinstance(v, (str, bool, int))}
        data["wsgi.version"] = list(environ["wsgi.version"])
        return _text(start_response, json.dumps(data).encode(),
                     headers=[("Content-Type", "application/json")])  # fmt: skip
    if path == "/concurrent":
        # Sleeps, and answers how many requests this worker had in here at once.
        global _inside, _most_inside
        with _lock:
            _inside += 1
            _most_inside = max(_most_inside, _inside)
        time.sleep(float(args.get("seconds", "0.2")))
        with _lock:
            _inside -= 1
            most = _most_inside
        return _text(start_response, str(most).encode())
    if path == "/slow":
        if "started" in args:  # a file that tells the test the app is running (no polling)
            with open(args["started"], "w"):
                pass
        time.sleep(float(args.get("seconds", "1")))
        return _text(start_response, b"slow done")
    if path == "/stream":
        n, size = int(args.get("n", "3")), int(args.get("size", "5"))
        delay = float(args.get("delay", "0"))
        start_response("200 OK", [("Content-Type", "application/octet-stream")])

        def generate() -> Iterator[bytes]:
            for i in range(n):
                if delay:
                    time.sleep(delay)
                yield bytes([65 + i % 26]) * size

        return Tracked(generate(), args.get("name", "stream"))
    if path == "/write":
        write = start_response("200 OK", [("Content-Type", "text/plain")])
        write(b"written ")
        return [b"returned"]
    if path == "/error":
        raise RuntimeError("probe: deliberate failure")
    if path == "/error-after-head":
        start_response("200 OK", [])

        def broken() -> Iterator[bytes]:
            yield b"partial"
            raise RuntimeError("probe: failure after the head")

        return broken()
    if path == "/file":
        fh = open(args["path"], "rb")  # noqa: SIM115 - closed by the server
        headers = [("Content-Type", "application/octet-stream")]
        if "length" in args:
            headers.append(("Content-Length", args["length"]))
        start_response("200 OK", headers)
        return environ["wsgi.file_wrapper"](fh, 65536)  # type: ignore[no-any-return]
    if path == "/closed":
        with _lock:
            return _text(start_response, json.dumps(CLOSED).encode())
    if path == "/status":
        code = args.get("code", "204")
        start_response(f"{code} Whatever", [("Content-Length", args.get("length", "0"))]
                       if "length" in args else [])  # fmt: skip
        return [args.get("body", "").encode()]
    if path == "/close":
        return _text(start_response, b"bye", headers=[("Connection", "close")])
    return _text(start_response, b"not found", "404 Not Found")


application = app
