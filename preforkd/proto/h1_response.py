"""The sending half of the HTTP/1.1 core: framing one response to one request.

``ResponseFramer`` turns a WSGI status and header list plus body pieces into bytes: status
line, header checks (no response splitting), Date and Server, and Content-Length, chunked
or close-delimited framing as the request and status allow (RFC 9112 §6, §7; RFC 9110
§6.4.1). One instance per response, so pipelined responses share no state. Pure: no IO.

``ResponseFramer.head`` is the C version from ``preforkd.native._h1frame`` when it is
built (and ``PREFORKD_PURE_PYTHON`` is not set): it writes the head of a plainly valid
response and hands every other one, and every error, to ``head_py``, the reference
written here (tests/native/ compares the two).
"""

from __future__ import annotations

import enum
from http import HTTPStatus

from preforkd import native
from preforkd.errors import LocalProtocolError
from preforkd.proto.events import Request
from preforkd.proto.fields import (
    check_name,
    check_status,
    check_value,
    content_length,
    valid_names,
    valid_statuses,
)

__all__ = ["CONTINUE_RESPONSE", "ResponseFramer", "error_response"]

_CACHE_MAX = 1024  # bound of the memo tables below (names and statuses repeat endlessly)

CONTINUE_RESPONSE = b"HTTP/1.1 100 Continue\r\n\r\n"

# Response fields the framer owns or must drop (PEP 3333 forbids hop-by-hop fields from
# the app; RFC 9110 §7.6.1 lists them).
_R_CL, _R_TE, _R_CONNECTION, _R_DATE, _R_SERVER = (
    "content-length",
    "transfer-encoding",
    "connection",
    "date",
    "server",
)
_R_DROP = frozenset(("keep-alive", "upgrade", "proxy-connection"))
_R_WATCHED = frozenset((_R_CL, _R_TE, _R_CONNECTION, _R_DATE, _R_SERVER)) | _R_DROP


class _Framing(enum.Enum):
    NONE = "no body"  # HEAD, 1xx, 204, 304 (RFC 9110 §6.4.1)
    LENGTH = "Content-Length"
    CHUNKED = "chunked"
    CLOSE = "delimited by closing the connection"  # RFC 9112 §6.3 item 8


_NONE, _LENGTH, _CHUNKED, _CLOSE = _Framing.NONE, _Framing.LENGTH, _Framing.CHUNKED, _Framing.CLOSE

# Memo tables for head(), bounded like the others: applications answer with the same
# status and the same fields over and over, so each is checked and encoded once per
# worker. Fields the framer merely copies map to their encoded line; a Content-Length
# field maps to its value as an int (it steers the framing); the other fields in
# _R_WATCHED are not kept. dict operations are atomic: threads may share them.
_status_lines: dict[str, tuple[int, bytes]] = {}  # status -> (code, encoded status line)
_field_lines: dict[tuple[str, str], bytes | int] = {}  # (name, value) -> b"name: value\r\n"
_DEFAULT_SERVER_LINE = b"Server: preforkd\r\n"


def _encode(text: str) -> bytes:
    try:
        return text.encode("latin-1")
    except UnicodeEncodeError as exc:
        raise LocalProtocolError("response header is not latin-1", 500) from exc


class ResponseFramer:
    """Frames ONE response to ONE request, so pipelined responses share no state.

    ``head()`` once, ``body()`` any number of times, ``end()`` once. ``keep_alive`` is
    valid after ``head()`` and may turn False later (body cut short or truncated): the
    caller closes the connection after this response when it is False.
    """

    __slots__ = (
        "_date",
        "_framing",
        "_remaining",
        "_request",
        "_server",
        "_stage",
        "bytes_sent",
        "keep_alive",
        "status_code",
        "truncated",
    )

    def __init__(self, request: Request, date: bytes, server: bytes = b"preforkd") -> None:
        self._request = request
        self._date = date
        self._server = _DEFAULT_SERVER_LINE if server == b"preforkd" else b"Server: %s\r\n" % server
        self._stage = 0  # 0: before head(), 1: sending the body, 2: ended
        self._framing = _NONE
        self._remaining = 0
        self.status_code = 0
        self.keep_alive = False
        self.bytes_sent = 0  # body bytes, unframed (for the access log)
        self.truncated = False  # the app gave more than its Content-Length

    def head(self, status: str, headers: list[tuple[str, str]]) -> bytes:
        """The status line and header section, e.g. ``head("200 OK", [...])``.

        Raises ``LocalProtocolError`` (status 500) for an invalid status, field name or
        value, or Content-Length; nothing has been sent then.

        This is the pure-Python reference (``head_py``): when :mod:`preforkd.native` is
        built, ``head`` is its C version, which calls this one for every response it does
        not take itself (anything unusual, every error).
        """
        if self._stage:
            raise LocalProtocolError("head() called twice", 500)
        code, status_line = _status_lines.get(status) or _status_line(status)
        request = self._request
        lines = [status_line]
        length: int | None = None
        close = has_date = has_server = False
        known = _field_lines
        for item in headers:
            try:
                line = known.get(item)
            except TypeError:  # unhashable: not a (str, str) pair, refused below
                line = None
            if line is not None:  # the common case: a field seen (and checked) before
                if type(line) is bytes:
                    lines.append(line)
                    continue
                if length is not None and length != line:
                    raise LocalProtocolError("conflicting Content-Length values", 500)
                length = line  # type: ignore[assignment]  # the int of a Content-Length
                continue
            name, value = item
            if name not in valid_names:
                check_name(name)
            if type(value) is not str or not value.isprintable():
                check_value(name, value)
            key = name.lower()
            if key in _R_WATCHED:
                if key == _R_CL:
                    length = content_length(value, length)
                    if len(known) < _CACHE_MAX:
                        known[item] = length
                    continue  # added back below, when the status allows it
                if key == _R_TE:
                    # PEP 3333: no hop-by-hop fields from the app. "chunked" is taken as
                    # "frame it for me"; any other coding would change the body's meaning.
                    if value.strip().lower() != "chunked":
                        raise LocalProtocolError(f"unsupported Transfer-Encoding {value!r}", 500)
                    continue
                if key == _R_CONNECTION:
                    # Honour "close" (RFC 9110 §7.6.1); every other option is hop-by-hop.
                    if "close" in (t.strip().lower() for t in value.split(",")):
                        close = True
                    continue
                if key in _R_DROP:
                    continue
                if key == _R_DATE:
                    has_date = True
                else:
                    has_server = True
                lines.append(_encode(f"{name}: {value}\r\n"))
                continue
            line = _encode(f"{name}: {value}\r\n")
            if len(known) < _CACHE_MAX:
                known[item] = line
            lines.append(line)
        if not has_date:
            lines.append(b"Date: %s\r\n" % self._date)
        if not has_server:
            lines.append(self._server)
        framing = self._choose_framing(code, length)
        if length is not None and code >= 200 and code != 204:
            # RFC 9110 §8.6: never in 1xx or 204; kept for HEAD and 304, where it describes
            # the representation the GET would have sent.
            lines.append(b"Content-Length: %d\r\n" % length)
        elif framing is _CHUNKED:
            lines.append(b"Transfer-Encoding: chunked\r\n")
        keep_alive = request.keep_alive and not close and framing is not _CLOSE
        if not keep_alive:
            # RFC 9112 §9.6: tell the client the connection ends with this response.
            lines.append(b"Connection: close\r\n")
        elif request.http_version == "1.0":
            lines.append(b"Connection: keep-alive\r\n")  # RFC 9112 §9.3: HTTP/1.0 opt-in
        lines.append(b"\r\n")
        data = b"".join(lines)
        self.status_code = code
        self.keep_alive = keep_alive
        self._framing = framing
        self._stage = 1
        return data

    def _choose_framing(self, code: int, length: int | None) -> _Framing:
        if code < 200 or code == 204 or code == 304 or self._request.method == "HEAD":
            return _NONE  # RFC 9110 §6.4.1: these responses have no content
        if length is not None:
            self._remaining = length
            return _LENGTH
        if self._request.http_version == "1.1":
            return _CHUNKED  # RFC 9112 §7.1
        return _CLOSE  # an HTTP/1.0 client knows no chunked coding (RFC 9112 §6.3 item 8)

    def body(self, data: bytes) -> bytes:
        """The bytes to send for this piece of the body (b"" when there is nothing)."""
        if self._stage != 1:
            raise LocalProtocolError("body() outside head() ... end()", 500)
        framing = self._framing
        size = len(data)
        if framing is _CHUNKED:
            if not size:
                return b""  # an empty chunk would end the body (RFC 9112 §7.1)
            self.bytes_sent += size
            return b"".join((b"%x\r\n" % size, data, b"\r\n"))
        if framing is _LENGTH:
            remaining = self._remaining
            if size > remaining:
                # Never send more than declared: the excess would be read as the next
                # response (RFC 9112 §6.3 item 6). The connection must not be reused.
                data = data[:remaining]
                size = remaining
                self.truncated = True
                self.keep_alive = False
            self._remaining = remaining - size
            self.bytes_sent += size
            return data
        if framing is _CLOSE:
            self.bytes_sent += size
            return data
        return b""

    def count_sent(self, size: int) -> None:
        """Account for ``size`` body bytes the caller sent itself (sendfile(2)).

        Only for Content-Length framing, where the bytes need no framing of their own."""
        if self._stage != 1 or self._framing is not _LENGTH or size > self._remaining:
            raise LocalProtocolError("count_sent() needs room in a Content-Length body", 500)
        self._remaining -= size
        self.bytes_sent += size

    def end(self) -> bytes:
        """The bytes that finish the response (the last chunk when chunked)."""
        if self._stage != 1:
            raise LocalProtocolError("end() without head(), or twice", 500)
        self._stage = 2
        if self._framing is _CHUNKED:
            return b"0\r\n\r\n"
        if self._framing is _LENGTH and self._remaining:
            # Fewer bytes than declared: the client would wait for the rest, or read the
            # next response as this body. Only closing the connection ends it safely.
            self.keep_alive = False
        elif self._framing is _CLOSE:
            self.keep_alive = False
        return b""


head_py = ResponseFramer.head
if native.ENABLED:
    try:
        from preforkd.native import _h1frame
    except ImportError:  # not built: the reference serves
        pass
    else:
        ResponseFramer.head = _h1frame.bind_head(  # type: ignore[method-assign]
            head_py, ResponseFramer, Request, _NONE, _LENGTH, _CHUNKED, _CLOSE
        )


def _status_line(status: str) -> tuple[int, bytes]:
    code, line = valid_statuses.get(status) or check_status(status)
    result = code, _encode(line)
    if len(_status_lines) < _CACHE_MAX:
        _status_lines[status] = result
    return result


# -- canned responses -----------------------------------------------------------------------

_REASONS = {int(s): s.phrase for s in HTTPStatus}


def error_response(status: int, date: bytes, server: bytes = b"preforkd") -> bytes:
    """A complete small response for ``status`` that closes the connection.

    For the errors the server answers itself (400, 414, 431, 501, 505, 500, 503...).
    """
    if not 100 <= status <= 599:
        raise ValueError(f"invalid status {status}")
    reason = _REASONS.get(status, "Error").encode("ascii")
    body = b"%d %s\n" % (status, reason)
    return (
        b"HTTP/1.1 %d %s\r\nDate: %s\r\nServer: %s\r\n"
        b"Content-Type: text/plain; charset=utf-8\r\nContent-Length: %d\r\n"
        b"Connection: close\r\n\r\n%s" % (status, reason, date, server, len(body), body)
    )
