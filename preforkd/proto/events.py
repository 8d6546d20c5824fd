"""The event vocabulary shared by the HTTP/1.1 and HTTP/2 cores.

Both protocol cores turn received bytes into these events, so the WSGI bridge never
needs to know which protocol carried a request. Header names are lower-case ``str``
(latin-1 decoded, as PEP 3333 wants native strings); values are ``str`` as received,
with surrounding whitespace stripped. ``stream_id`` is 0 on HTTP/1.1.
"""

from __future__ import annotations

from dataclasses import dataclass

Headers = list[tuple[str, str]]


@dataclass(slots=True)
class Request:
    """The head of a request has been received."""

    method: str
    target: str  # the raw request-target, e.g. "/a%20b?x=1" (RFC 9112 §3.2)
    http_version: str  # "1.0", "1.1" or "2"
    headers: Headers
    keep_alive: bool = True  # the client allows the connection to be reused
    expect_continue: bool = False  # "Expect: 100-continue" (RFC 9110 §10.1.1)
    has_body: bool = False  # Content-Length > 0 or chunked: Data events will follow
    content_length: int | None = None
    stream_id: int = 0
    # HTTP/1.1 "Upgrade" token the client asked for (lower-case), e.g. "h2c" or "websocket".
    upgrade: str | None = None


@dataclass(slots=True)
class Data:
    """A piece of a request body.

    A memoryview only on HTTP/1.1, when the bytes were left where they were read (the
    rest of a large read after its request head, or a read into a body buffer, see
    worker/h1body.py): whoever keeps it must not expect it to be ``bytes``."""

    data: bytes | memoryview
    stream_id: int = 0


@dataclass(slots=True)
class EndOfMessage:
    """The request body (possibly empty) is complete."""

    stream_id: int = 0


@dataclass(slots=True)
class StreamReset:
    """The peer abandoned one request (HTTP/2 RST_STREAM)."""

    stream_id: int
    error_code: int = 0


@dataclass(slots=True)
class ConnectionClosed:
    """The peer closed its side of the connection."""


Event = Request | Data | EndOfMessage | StreamReset | ConnectionClosed
