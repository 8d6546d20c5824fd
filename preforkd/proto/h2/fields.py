"""HTTP/2 field sections: received requests checked and turned into events; responses built.

The field rules themselves (tokens, values, Host, Content-Length, connection-specific
fields) are HTTP's, shared with the HTTP/1.1 core in proto/fields.py; what is here is
HTTP/2's mapping onto them: pseudo-header fields (RFC 9113 §8.3), the order and
repetition rules of §8.2-8.3, and trailers. A malformed request becomes a stream error
(§8.1.1), never a lost connection.

Names and values become ``str`` by latin-1, as PEP 3333 and the HTTP/1.1 core do.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from preforkd.errors import LocalProtocolError
from preforkd.proto.events import Headers, Request
from preforkd.proto.fields import (
    BAD_VALUE_BYTES,
    CONNECTION_FIELDS,
    HOST_BYTES,
    LOWER_TOKEN_BYTES,
    TOKEN_BYTES,
    check_name,
    check_status,
    check_value,
    content_length,
    is_content_length,
    valid_names,
    valid_statuses,
)

__all__ = [
    "Malformed",
    "ResponseHead",
    "Unsupported",
    "check_trailers",
    "parse_request",
    "response_head",
    "server_response",
]

Fields = list[tuple[bytes, bytes]]


class Malformed(Exception):
    """A malformed request (RFC 9113 §8.1.1): stream error PROTOCOL_ERROR."""


class Unsupported(Exception):
    """A well-formed request the server answers itself with ``status``, without the app."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status


# The grammar shared with HTTP/1.1 (proto/fields.py): RFC 9113 §8.2.1 lower-case field
# names, RFC 9110 §9.1 methods, values without controls or surrounding whitespace, and
# RFC 9113 §8.3.1 :authority / Host without userinfo and with a non-empty host.
_NAME = LOWER_TOKEN_BYTES
_METHOD = TOKEN_BYTES
_BAD_VALUE = BAD_VALUE_BYTES
_AUTHORITY = HOST_BYTES
# RFC 3986 §3.1.
_SCHEME = re.compile(rb"[A-Za-z][A-Za-z0-9+\-.]*")
# RFC 9113 §8.3.1: :path is absolute-path [ "?" query ] (or "*" for OPTIONS): visible ASCII
# without "#" (no fragment, RFC 3986 §3.5). Like the HTTP/1.1 core, no raw SP or non-ASCII.
_PATH = re.compile(rb"/[\x21\x22\x24-\x7e]*")
_PSEUDO = (b":method", b":scheme", b":path", b":authority")

_CACHE_MAX = 1024
_valid_names: set[bytes] = set()  # bounded; set operations are atomic


def _check_field(name: bytes, value: bytes) -> None:
    if name not in _valid_names:
        if _NAME.fullmatch(name) is None:
            raise Malformed(f"invalid field name {name!r}")
        if len(_valid_names) < _CACHE_MAX:
            _valid_names.add(name)
    if value and _BAD_VALUE.search(value) is not None:
        raise Malformed(f"invalid value for field {name!r}")
    if name in CONNECTION_FIELDS:
        raise Malformed(f"connection-specific field {name!r}")
    # §8.2.2: TE may only carry "trailers".
    if name == b"te" and value.lower() != b"trailers":
        raise Malformed("TE other than 'trailers'")


# Request field blocks that parsed cleanly -> what parse_request made of them. A client
# repeats its requests' fields (the HPACK memo in codec.py even returns the same decoded
# list), and checking them again (four regular expressions, a scan of every value, the
# decoding) was a fifth of a small request's CPU. The result depends only on the fields
# and the two limits; what depends on the stream (its id, END_STREAM) is applied per call.
# Bounded like the other memo tables, and in bytes too: only blocks of up to
# _PARSED_BLOCK_MAX bytes of names and values are kept (big cookies are parsed each time),
# and when full, new shapes are parsed without memo: at most about 0.5 MiB per worker.
_Parsed = tuple[str, str, tuple[tuple[str, str], ...], int | None, bool]
_parsed: dict[tuple[object, ...], _Parsed] = {}
_PARSED_MAX = 128
_PARSED_BLOCK_MAX = 2048


def parse_request(
    fields: Fields,
    stream_id: int,
    end_stream: bool,
    max_request_line: int = 8190,
    max_field_size: int = 8190,
) -> Request:
    """The Request for a decoded request field block, or ``Malformed`` / ``Unsupported``.

    The HTTP/1.1 limits hold here too, so that a request refused on one protocol is not
    accepted on the other: a field larger than ``max_field_size`` (name + value) gets 431,
    and a method and :path longer than ``max_request_line`` allows gets 414."""
    key = (max_request_line, max_field_size, *fields)
    parsed = _parsed.get(key)
    if parsed is None:
        parsed = _parse_request(fields, max_request_line, max_field_size)
        if (
            len(_parsed) < _PARSED_MAX
            and sum(len(name) + len(value) for name, value in fields) <= _PARSED_BLOCK_MAX
        ):
            _parsed[key] = parsed
    method, path, headers, length, expect = parsed
    if end_stream and length:
        # §8.1.1: content-length must equal the DATA payload, and there is none.
        raise Malformed("content-length without a body")
    return Request(
        method,
        path,
        "2",
        list(headers),
        True,  # keep_alive: an HTTP/2 connection outlives its streams
        expect and not end_stream,
        not end_stream,  # has_body
        length,
        stream_id,
    )


def _parse_request(fields: Fields, max_request_line: int, max_field_size: int) -> _Parsed:
    """parse_request's checks, for the fields alone."""
    pseudo: dict[bytes, bytes] = {}
    headers: Headers = []
    regular = False
    hosts: list[bytes] = []
    content_length: bytes | None = None
    expect = False
    for name, value in fields:
        if name[:1] == b":":
            # §8.3: only the defined pseudo-headers, each once, all before regular fields
            # (:status is a response field; :protocol needs RFC 8441, which we do not offer).
            if regular or name not in _PSEUDO or name in pseudo:
                raise Malformed(f"misplaced, unknown or repeated pseudo-header {name!r}")
            pseudo[name] = value
            continue
        regular = True
        _check_field(name, value)
        if len(name) + len(value) > max_field_size:
            raise Unsupported("header field too large", 431)
        if name == b"content-length":
            if content_length is not None:
                # RFC 9110 §8.6: reject, or merge identical values; we reject, like the
                # HTTP/1.1 core, so CONTENT_LENGTH is never a list.
                raise Malformed("more than one content-length")
            content_length = value
        elif name == b"host":
            hosts.append(value)
        elif name == b"expect":
            expect = value.lower() == b"100-continue"
        headers.append((name.decode("latin-1"), value.decode("latin-1")))
    method = pseudo.get(b":method")
    if method is None or _METHOD.fullmatch(method) is None:
        raise Malformed("missing or invalid :method")
    authority = pseudo.get(b":authority")
    _check_authority(authority, hosts)
    if method == b"CONNECT":
        # §8.5: CONNECT carries :authority only. A WSGI application cannot run a tunnel,
        # so a well-formed CONNECT is answered 501 by the server itself.
        if b":scheme" in pseudo or b":path" in pseudo or authority is None:
            raise Malformed("CONNECT with :scheme or :path, or without :authority")
        raise Unsupported("CONNECT is not supported", 501)
    scheme, path = pseudo.get(b":scheme"), pseudo.get(b":path")
    if scheme is None or _SCHEME.fullmatch(scheme) is None:
        raise Malformed("missing or invalid :scheme")
    if path is None or (_PATH.fullmatch(path) is None and (path != b"*" or method != b"OPTIONS")):
        raise Malformed("missing or invalid :path")  # §8.3.1 ("*" only for OPTIONS)
    if len(method) + len(path) + len("  HTTP/1.1") > max_request_line:
        raise Unsupported(":path too long", 414)  # as the HTTP/1.1 request line
    length = _content_length(content_length)
    if authority is not None and not hosts:
        # §8.3.1: :authority replaces Host; the WSGI environ wants HTTP_HOST.
        headers.insert(0, ("host", authority.decode("latin-1")))
    return method.decode("ascii"), path.decode("ascii"), tuple(headers), length, expect


def _check_authority(authority: bytes | None, hosts: list[bytes]) -> None:
    if authority is not None and _AUTHORITY.fullmatch(authority) is None:
        raise Malformed("invalid :authority")
    if not hosts:
        if authority is None:
            # h2 and the HTTP/1.1 core alike insist on knowing the target host.
            raise Malformed("neither :authority nor host")
        return
    if len(hosts) > 1 or _AUTHORITY.fullmatch(hosts[0]) is None:
        raise Malformed("repeated or invalid host")  # RFC 9112 §3.2 applies to the field
    if authority is not None and hosts[0].lower() != authority.lower():
        # §8.3.1: a Host that identifies another entity than :authority SHOULD be malformed.
        raise Malformed("host differs from :authority")


def _content_length(value: bytes | None) -> int | None:
    if value is None:
        return None
    if not is_content_length(value):
        raise Malformed("invalid content-length")
    return int(value)


def check_trailers(fields: Fields) -> None:
    """Request trailers (RFC 9113 §8.1): checked like any field section, then dropped."""
    for name, value in fields:
        if name[:1] == b":":
            raise Malformed("pseudo-header in trailers")
        _check_field(name, value)


# -- responses ----------------------------------------------------------------------------

# Fields the response builder owns or drops: RFC 9113 §8.2.2 forbids connection-specific
# fields (PEP 3333 forbids hop-by-hop fields from the app anyway).
# RFC 9113 §8.2.2: the connection-specific fields, as the str names the app gives.
DROPPED_RESPONSE_FIELDS = frozenset(name.decode() for name in CONNECTION_FIELDS)
_WATCHED = DROPPED_RESPONSE_FIELDS | {"content-length", "te", "date", "server"}


@dataclass(slots=True)
class ResponseHead:
    code: int
    fields: Fields  # ready for h2: b":status" first, names lower-case, latin-1 bytes
    content_length: int | None  # the body length to enforce, when the response has a body
    no_body: bool  # HEAD, 1xx, 204 and 304 (RFC 9110 §6.4.1): no DATA may follow


# Response heads already built, by (status, headers, HEAD request, date, server): an
# application answers with the same few heads over and over (the Date changes once a
# second). Bounded: a full memo is emptied. Only a valid head is remembered.
_HEAD_MEMO: dict[tuple[object, ...], ResponseHead] = {}
_HEAD_MEMO_MAX = 256


def response_head(
    status: str, headers: Headers, head_request: bool, date: bytes, server: bytes
) -> ResponseHead:
    """Check an application's status and headers; raise ``LocalProtocolError`` (500).

    The result is shared between calls with equal arguments: do not mutate it."""
    try:
        key = (status, *headers, head_request, date, server)
        head = _HEAD_MEMO.get(key)
    except TypeError:  # an unhashable header (a list pair, say): built without the memo
        return _build_head(status, headers, head_request, date, server)
    if head is None:
        head = _build_head(status, headers, head_request, date, server)
        if len(_HEAD_MEMO) >= _HEAD_MEMO_MAX:
            _HEAD_MEMO.clear()
        _HEAD_MEMO[key] = head
    return head


def _build_head(
    status: str, headers: Headers, head_request: bool, date: bytes, server: bytes
) -> ResponseHead:
    # The same WSGI status rules as HTTP/1.1; only the code is sent (RFC 9113 §8.3.2).
    code = (valid_statuses.get(status) or check_status(status))[0]
    if code == 101:
        raise LocalProtocolError("101 is not used in HTTP/2 (RFC 9113 §8.6)", 500)
    fields: Fields = [(b":status", status[:3].encode("ascii"))]
    length: int | None = None
    has_date = has_server = False
    try:
        for name, value in headers:
            if name not in valid_names:
                check_name(name)
            if type(value) is not str or not value.isprintable():
                check_value(name, value)
            key = name.lower()
            value = value.strip(" \t")  # RFC 9113 §8.2.1: no whitespace at either end
            if key in _WATCHED:
                if key == "content-length":
                    length = content_length(value, length)
                    continue  # added back below when the status allows it
                if key in DROPPED_RESPONSE_FIELDS or (key == "te" and value.lower() != "trailers"):
                    continue
                has_date = has_date or key == "date"
                has_server = has_server or key == "server"
            fields.append((key.encode("latin-1"), value.encode("latin-1")))
    except UnicodeEncodeError as exc:
        raise LocalProtocolError("response header is not latin-1", 500) from exc
    if code < 200:
        return ResponseHead(code, fields, None, True)
    if not has_date and date:
        fields.append((b"date", date))
    if not has_server and server:
        fields.append((b"server", server))
    if length is not None and code != 204:
        # RFC 9110 §8.6: never in 204; kept for HEAD and 304, where it describes the
        # representation a GET would have sent.
        fields.append((b"content-length", str(length).encode("ascii")))
    no_body = head_request or code == 204 or code == 304
    return ResponseHead(code, fields, None if no_body else length, no_body)


def server_response(status: int, date: bytes, server: bytes) -> Fields:
    """The head of an empty response the server gives itself (431, 501)."""
    fields: Fields = [(b":status", str(status).encode("ascii"))]
    if date:
        fields.append((b"date", date))
    if server:
        fields.append((b"server", server))
    fields.append((b"content-length", b"0"))
    return fields
