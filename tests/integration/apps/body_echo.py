"""Answers with the request body, byte for byte, read the way the query string says:
``?read=N`` reads N bytes at a time (default 65536), ``?read=line`` uses readline(),
``?read=all`` one read(); ``?sleep=S`` waits S seconds before reading (the body then
piles up to the body buffer and reading pauses)."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from typing import Any
from urllib.parse import parse_qs


def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    query = {k: v[-1] for k, v in parse_qs(environ.get("QUERY_STRING", "")).items()}
    if "sleep" in query:
        time.sleep(float(query["sleep"]))
    stream = environ["wsgi.input"]
    how = query.get("read", "65536")
    pieces: list[bytes] = []
    if how == "all":
        pieces.append(stream.read())
    elif how == "line":
        while line := stream.readline():
            pieces.append(line)
    else:
        size = int(how)
        while chunk := stream.read(size):
            assert type(chunk) is bytes  # never a view of a buffer the server reuses
            pieces.append(chunk)
    body = b"".join(pieces)
    start_response(
        "200 OK",
        [("Content-Type", "application/octet-stream"), ("Content-Length", str(len(body)))],
    )
    return [body]
