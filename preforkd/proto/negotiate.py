"""Choosing HTTP/1.1 or HTTP/2 on a cleartext connection, from its first bytes.

RFC 9113 §3.3: a client with prior knowledge starts with the connection preface. Anything
else on a listener that serves HTTP/1.1 is HTTP/1.1 (which may then ask to upgrade with
``Upgrade: h2c``, RFC 7540 §3.2). Pure: bytes and values in, verdicts out.
"""

from __future__ import annotations

import enum
import re

from preforkd.proto.events import Request
from preforkd.proto.h2.frames import PREFACE

# A GOAWAY with last stream 0 and PROTOCOL_ERROR (RFC 9113 §6.8, §7): the answer to bytes
# that begin like the preface but are not it (§3.4: "MUST treat ... as a connection error").
GOAWAY_PROTOCOL_ERROR = b"\x00\x00\x08\x07\x00\x00\x00\x00\x00" + b"\x00" * 4 + b"\x00\x00\x00\x01"


class Start(enum.Enum):
    HTTP2 = "the HTTP/2 preface"
    HTTP1 = "anything else: HTTP/1.1"
    UNDECIDED = "a prefix of the preface: wait for more bytes"
    BROKEN = "starts like the preface but is not it"


def classify(data: bytes) -> Start:
    """What the first bytes of a cleartext connection are."""
    if data.startswith(PREFACE):
        return Start.HTTP2
    if PREFACE.startswith(data):
        return Start.UNDECIDED
    # "PRI" is registered only for the preface (RFC 9113 §3.4, §11.6): no HTTP/1.1 client
    # sends it, so a mangled preface is an HTTP/2 error, not an HTTP/1.1 request.
    if data.startswith(b"PRI "):
        return Start.BROKEN
    return Start.HTTP1


# RFC 9112 §3: method SP request-target SP HTTP-version CRLF, for HTTP/1.x.
_HTTP1_REQUEST_LINE = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+ [^ \r\n]+ HTTP/1\.[0-9]\r\n")
_MAX_SNIFF = 8192  # bytes held while deciding what a connection to an HTTP/2-only port is


def is_http1_request(data: bytes) -> bool | None:
    """On a listener that speaks only HTTP/2, whether bytes that are not the preface are
    an HTTP/1.x request (answered 505, RFC 9110 §15.6.6) rather than a broken preface (a
    connection error PROTOCOL_ERROR, RFC 9113 §3.4). None: wait for the line's end."""
    if b"\r\n" not in data:
        return None if len(data) < _MAX_SNIFF else False
    return _HTTP1_REQUEST_LINE.match(data) is not None


def h2c_settings(request: Request) -> str | None:
    """The HTTP2-Settings value of an ``Upgrade: h2c`` request we may accept, else None.

    RFC 7540 §3.2: exactly one HTTP2-Settings field, and the field named in Connection
    (§3.2.1). We also decline a request that expects 100-continue (it waits for an
    HTTP/1.1 answer before sending its body).
    """
    if request.upgrade != "h2c" or request.expect_continue:
        return None
    values = [value for name, value in request.headers if name == "http2-settings"]
    if len(values) != 1:
        return None
    connection = ",".join(value for name, value in request.headers if name == "connection")
    tokens = {token.strip().lower() for token in connection.split(",")}
    if "http2-settings" not in tokens:
        return None
    return values[0]


def valid_http2_settings(value: str) -> bool:
    """The HTTP2-Settings value decodes to a SETTINGS payload (RFC 7540 §3.2.1)."""
    from preforkd.proto.h2.frames import parse_http2_settings

    try:
        parse_http2_settings(value)
    except ValueError:
        return False
    return True
