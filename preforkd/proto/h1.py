"""The HTTP/1.1 server-side protocol core: bytes in, events out; responses framed to bytes.

Theory of operation
-------------------
``H1Connection`` wraps ``httptools.HttpRequestParser`` (llhttp underneath, in its strict
default mode). llhttp owns the grammar: request line, field syntax and Content-Length
framing. Chunked bodies are decoded by :mod:`preforkd.proto.chunked` (llhttp refuses the
whitespace RFC 9112 §7.1.1 allows in chunk extensions): llhttp is stopped after a chunked
request's head, whose end we find ourselves (llhttp reports no offsets; see _head_end),
and a fresh parser takes the next request. The callbacks below add what llhttp leaves to
its user: size limits, the Host and request-target rules, the transfer-coding policy and
the version policy, and turn each request into the shared events (``events.Request``,
``Data``, ``EndOfMessage``, ``ConnectionClosed``). ``receive_data`` feeds one buffer and
returns every event it completed, so pipelined requests come out in order without extra
state in the caller.

Two rules keep this module honest:

1. No IO, no clock, no threads: bytes and values in, events and bytes out. The adapter
   owns sockets, timeouts and the decision to close.
2. A rule the callbacks enforce is cited to the RFC section that requires or allows it; a
   rule llhttp enforces is pinned by a test in tests/proto and the request corpus.

The sending half, ``ResponseFramer``, lives in :mod:`preforkd.proto.h1_response`.

Decisions worth knowing (details at the code that implements them):

* Bare LF line endings are rejected with 400: llhttp's strict mode wants CRLF everywhere,
  and we do not enable ``set_dangerous_leniencies`` (RFC 9112 §2.2 only *allows* a recipient
  to accept a bare LF; accepting it is a classic request-smuggling lever).
* EOF between requests or in the middle of a head gives ``ConnectionClosed`` (there is no
  request to answer); EOF in the middle of a body raises ``RemoteProtocolError(400)``.
* Duplicate Content-Length fields are rejected even when identical (llhttp strict; RFC 9110
  §8.6 allows rejecting them).
* Transfer-Encoding: chunked must be the final coding and appear once, else 400 (RFC 9112
  §6.3 item 4 says MUST); another coding before a final chunked gets 501 (§6.1).
* httptools skips the body of a request that llhttp treats as an upgrade (``Upgrade`` plus
  ``Connection: upgrade``, or CONNECT). We deliver that body ourselves (see
  ``_after_llhttp_pause``) so the caller always sees the whole request.
* Known gap: llhttp also accepts ``RTSP/1.x`` as the protocol of a request line whose method
  RTSP shares with HTTP (GET, POST...), and httptools does not expose the protocol name, so
  such a request is treated as HTTP/1.x. RTSP-only methods are rejected.
"""

from __future__ import annotations

import contextlib
import enum
from collections.abc import Callable
from dataclasses import dataclass
from typing import NoReturn

from httptools import (
    HttpParserCallbackError,
    HttpParserError,
    HttpParserUpgrade,
    HttpRequestParser,
)

from preforkd import native
from preforkd.errors import LocalProtocolError, RemoteProtocolError
from preforkd.proto.events import ConnectionClosed, Data, EndOfMessage, Event, Request
from preforkd.proto.fields import CONNECT_AUTHORITY, HOST, TOKEN_BYTES, is_content_length
from preforkd.proto.h1_body import ChunkedBody, LengthBody

__all__ = [
    "H1Connection",
    "H1Limits",
    "H1ProtocolError",
]


@dataclass(frozen=True, slots=True)
class H1Limits:
    """Size limits for request heads (the defaults are gunicorn's, which nginx matches)."""

    max_request_line: int = 8190  # RFC 9112 §3: 414 beyond; at least 8000 recommended
    max_header_fields: int = 100  # RFC 6585 §5: 431 when there are too many fields
    max_header_field_size: int = 8190  # name + value of one field; 431 beyond (RFC 6585 §5)

    def __post_init__(self) -> None:
        for name in ("max_request_line", "max_header_fields", "max_header_field_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"H1Limits.{name} must be positive")


class H1ProtocolError(RemoteProtocolError):
    """A ``RemoteProtocolError`` that also carries the events parsed before the error.

    When one buffer holds a complete request followed by garbage, ``events`` holds that
    request's events: the caller may answer them before sending ``error_response(status)``
    (or ignore them and answer only the error).
    """

    def __init__(self, message: str, status: int, events: list[Event]) -> None:
        super().__init__(message, status)
        self.events = events


class _State(enum.Enum):
    IDLE = "between requests"
    HEAD = "receiving a request head"
    BODY = "receiving a request body"
    UPGRADE_BODY = "receiving the body of an upgrade request"  # we count the bytes
    UPGRADE = "waiting for the caller to accept or decline an upgrade"
    CHUNKED = "receiving a chunked body, decoded by us (proto/h1_body.py)"
    LENGTH = "receiving a Content-Length body, counted by us (proto/h1_body.py)"
    CLOSED = "the last request did not allow keep-alive; later bytes are ignored"
    EOF = "the peer closed its side"
    ERROR = "malformed input; the connection is dead"


_IDLE, _HEAD, _BODY = _State.IDLE, _State.HEAD, _State.BODY
_UPGRADE_BODY, _UPGRADE, _CLOSED = _State.UPGRADE_BODY, _State.UPGRADE, _State.CLOSED
_CHUNKED, _LENGTH = _State.CHUNKED, _State.LENGTH

# Where a message starts in the buffer llhttp is parsing (see _head_end): an offset, or
_EARLIER = -2  # its head began in an earlier buffer (its last bytes are in _tail)
_UNKNOWN = -1  # we lost track (a body llhttp framed without telling us its end)
# or, not worked out yet, (where the message before it starts, that message's body length):
# finding a head's end costs a search, and only a chunked head needs it (see _resolve).
_Offset = int | tuple["_Offset", int]


class _TakeOver(Exception):
    """Raised from on_headers_complete to stop llhttp after a request's head whose body we
    frame ourselves (chunked, or a Content-Length body that goes on past this buffer)."""


# Request fields the callbacks act on; every other field is only recorded.
_HOST, _CL, _TE, _EXPECT, _UPGRADE_FIELD = (
    "host",
    "content-length",
    "transfer-encoding",
    "expect",
    "upgrade",
)
_WATCHED_FIELDS = frozenset((_HOST, _CL, _TE, _EXPECT, _UPGRADE_FIELD))

# The Host grammar (RFC 9110 §7.2; a server MUST answer 400 to an invalid Host, RFC 9112
# §3.2) and CONNECT's authority-form (§3.2.3) are HTTP's, shared with HTTP/2.
_HOST_RE = HOST
_AUTHORITY_RE = CONNECT_AUTHORITY

# llhttp shares its grammar with RTSP and ICE. It accepts RTSP-only methods only with an
# RTSP/x.y protocol, so seeing one means the request is not HTTP (RFC 9112 §3.1).
_NON_HTTP_METHODS = frozenset(
    b"ANNOUNCE DESCRIBE FLUSH GET_PARAMETER PAUSE PLAY RECORD REDIRECT SET_PARAMETER "
    b"SETUP TEARDOWN".split()
)

# llhttp reports errors by reason text only; all of them mean 400 except these.
_LLHTTP_STATUS = {
    # A well-formed version other than 1.x (0.9, 2.0) or an unknown minor (1.2): RFC 9110
    # §15.6.6. llhttp strict rejects 1.2 although RFC 9110 §2.5 would treat it as 1.1.
    "Invalid HTTP version": 505,
    # "PRI * HTTP/2.0": the HTTP/2 preface reached the HTTP/1.1 core (RFC 9113 §3.4).
    "Pause on PRI/Upgrade": 505,
}

_TOO_LARGE = 431  # RFC 6585 §5: Request Header Fields Too Large

# The methods llhttp parses. RFC 9110 §9.1: a method is any token, and the set is open
# (WebDAV, CalDAV and in-house methods). A request line with another token is handed to
# llhttp with a stand-in of ours (``_STAND_IN``, which frames a body the same way every
# non-CONNECT method does) and the real method is restored in the Request.
_LLHTTP_METHODS = (
    frozenset(
        b"DELETE GET HEAD POST PUT CONNECT OPTIONS TRACE COPY LOCK MKCOL MOVE PROPFIND "
        b"PROPPATCH SEARCH UNLOCK BIND REBIND UNBIND ACL REPORT MKACTIVITY CHECKOUT MERGE "
        b"M-SEARCH NOTIFY SUBSCRIBE UNSUBSCRIBE PATCH PURGE MKCALENDAR LINK UNLINK SOURCE "
        b"QUERY PRI".split()
    )
    | _NON_HTTP_METHODS
)
_STAND_IN = b"PUT"
_COMMON_METHODS = (b"GET ", b"POST ", b"HEAD ", b"PUT ", b"DELETE ", b"OPTIONS ", b"PATCH ")
# RFC 9110 §9.1: method = token (proto/fields.py).
_TOKEN_RE = TOKEN_BYTES
# The longest method we take (a request line is limited anyway; this bounds the look-ahead
# for a method split across reads).
_MAX_METHOD = 64

# Values already checked, so the common case is one set or dict lookup. Bounded, so that a
# peer (or an app) sending ever new values cannot grow them without limit. Shared by all
# connections of a process; set/dict operations are atomic, so app threads may use them.
_CACHE_MAX = 1024
_valid_hosts: set[str] = set()
_field_names: dict[bytes, str] = {}  # a field name as received -> its lower-case str


# The native head parser (preforkd/native/_h1head.c), when built and not switched off: it
# returns (method, target, version, headers, host_count, host, keep_alive, content_length,
# end) or None.
_ParseHead = Callable[
    [bytes, int, int, int, int],
    tuple[str, str, str, list[tuple[str, str]], int, str | None, bool, int | None, int] | None,
]
_parse_head: _ParseHead | None = None
if native.ENABLED:
    # Not built (no C compiler at install time): llhttp's callbacks do it all.
    with contextlib.suppress(ImportError):
        from preforkd.native._h1head import parse_head as _parse_head


def _skip_empty_lines(buf: bytes, start: int) -> int:
    """The offset of the first byte at or after ``start`` that is not CR or LF."""
    end = len(buf)
    while start < end and buf[start] in b"\r\n":
        start += 1
    return start


def absolute_form_authority(target: str) -> str:
    """The authority of an absolute-form request-target (RFC 9112 §3.2.2): what follows
    "scheme://" up to the path, query or end."""
    rest = target.partition("://")[2]
    end = len(rest)
    for stop in "/?#":
        index = rest.find(stop)
        if 0 <= index < end:
            end = index
    return rest[:end]


class H1Connection:
    """Parse the requests a client sends on one connection."""

    __slots__ = (
        "_body_skipped",
        "_buf",
        "_callbacks",
        "_chunked",
        "_content_length",
        "_error",
        "_events",
        "_expect",
        "_field_limit",
        "_headers",
        "_held",
        "_host",
        "_host_count",
        "_keep_alive",
        "_length",
        "_limits",
        "_max_fields",
        "_method",
        "_next_start",
        "_parser",
        "_pending_error",
        "_request",
        "_stall",
        "_stall_limit",
        "_start",
        "_state",
        "_synthetic",
        "_tail",
        "_target_hint",
        "_transfer_encoding",
        "_upgrade",
        "_url",
        "trailing_data",
    )
    # What the head being received says (reset by _on_message_begin).
    _url: bytes
    _headers: list[tuple[str, str]]
    _host_count: int
    _host: str | None
    _content_length: str | None
    _transfer_encoding: list[str] | None
    _expect: str | None
    _upgrade: str | None

    def __init__(self, limits: H1Limits = H1Limits()) -> None:
        self._limits = limits
        self._field_limit = limits.max_header_field_size
        self._max_fields = limits.max_header_fields
        # Up to this target length the request line is within its limit whatever the
        # method (llhttp's longest is 13 bytes); beyond it we measure the line exactly.
        self._target_hint = limits.max_request_line - len("  HTTP/1.1") - 16
        # A head that grows by this much without completing a field is too large: the
        # exact per-field check (on_header) only runs once a field ends, and httptools
        # buffers the field until then. The slack covers separators and the request line.
        self._stall_limit = limits.max_request_line + limits.max_header_field_size + 64
        self._callbacks = _Callbacks(self)
        self._parser = HttpRequestParser(self._callbacks)
        self._events: list[Event] = []
        self._state = _IDLE
        self._error: RemoteProtocolError | None = None
        self._pending_error: RemoteProtocolError | None = None  # raised inside a callback
        self._stall = 0
        self._keep_alive = True
        self._request: Request | None = None
        self._body_skipped = False
        self._synthetic = False
        self._length = LengthBody()  # a counted Content-Length body (re-armed per body)
        self._method: str | None = None  # a method llhttp does not know (see _LLHTTP_METHODS)
        self._chunked: ChunkedBody | None = None  # a chunked body we decode
        # Message boundaries in the buffer llhttp parses (llhttp reports no offsets): where
        # the current message starts, where the next one will, and the last bytes of a
        # head begun in an earlier buffer. Needed to take a chunked body over from llhttp.
        self._buf = b""
        self._start: _Offset = 0
        self._next_start: _Offset = _UNKNOWN
        self._tail: bytes | None = b""
        self._held = b""  # the start of a request line, until its method is complete
        self.trailing_data = b""
        self._on_message_begin()  # empty head state, then: not in a head yet
        self._state = _IDLE

    # -- public API ---------------------------------------------------------------------

    def receive_data(self, data: bytes) -> list[Event]:
        """Feed received bytes; ``b""`` means the peer closed its side (EOF).

        Returns the events completed by these bytes, in order, possibly for several
        pipelined requests. Raises ``H1ProtocolError`` (a ``RemoteProtocolError``) with the
        status to answer on malformed input; the connection is dead after that and every
        further call raises again.
        """
        if self._error is not None:
            self._fail(self._error, [])
        state = self._state
        if state is _LENGTH and 0 < len(data) < self._length.remaining:
            # The common read of a large upload: all of it is body. The bytes object is
            # passed on as it is (no copy, no llhttp, no callback).
            self._length.remaining -= len(data)
            return [Data(data)]
        if not data:
            return self._receive_eof()
        if state is _UPGRADE:
            self.trailing_data += data
            return []
        if state is _CLOSED or state is _State.EOF:
            # RFC 9112 §9.6: after a "close" request the server closes once it has answered;
            # anything the client sent meanwhile is not read.
            return []
        events: list[Event] = []
        self._events = events
        nfields = len(self._headers)
        try:
            if state is _UPGRADE_BODY:
                self._receive_upgrade_body(data)
            else:
                if state is _LENGTH:
                    data = self._receive_length(data)
                elif state is _CHUNKED:
                    data = self._receive_chunked(data)
                if data and self._state is _IDLE and not self._held and _parse_head:
                    data = self._take_plain_heads(data, _parse_head)
                if (
                    data
                    and self._state is _IDLE
                    and (self._held or not data.startswith(_COMMON_METHODS))
                ):
                    data = self._stand_in_method(data)  # not the common case: see there
                if data:
                    self._run_parser(data)
        except RemoteProtocolError as exc:  # from the chunked decoder
            self._fail(exc, events)
        except HttpParserError as exc:
            if self._state is _CLOSED and self._pending_error is None:
                return events  # llhttp: "Data after `Connection: close`" (see above)
            error = self._translate(exc)
            if str(exc) == "Invalid method encountered" and events:
                # A pipelined request after those in ``events``, whose method we could not
                # look at first (llhttp gives no offsets): not necessarily malformed, so
                # RFC 9110 §9.1's 501, never 400.
                error = RemoteProtocolError("method not implemented here", 501)
            self._fail(error, events)
        if events or len(self._headers) != nfields:
            self._stall = 0
        elif self._state is _HEAD or self._state is _BODY:
            self._stall += len(data)
            if self._stall > self._stall_limit:
                # The bytes since the last complete field are already too many for one
                # field (or, in a chunked body, for a chunk header or trailer field).
                status = _TOO_LARGE if self._state is _HEAD else 400
                self._fail(RemoteProtocolError("header field too large", status), events)
        return events

    @property
    def body_remaining(self) -> int:
        """Bytes still to come of a Content-Length body the core counts itself, else 0.

        While it is positive the caller may read up to that many bytes into a buffer of
        its own and pass them to :meth:`receive_body` instead of :meth:`receive_data`."""
        return self._length.remaining if self._state is _LENGTH else 0

    def receive_body(self, data: bytes | memoryview) -> list[Event]:
        """Feed bytes of the counted body (``0 < len(data) <= body_remaining``), such as a
        view of the buffer the transport read into.

        The ``Data`` event holds ``data`` itself, not a copy: the caller must leave those
        bytes unchanged for as long as anything refers to that view (see
        worker/h1body.py). Returns ``[Data]``, or ``[Data, EndOfMessage]`` for the body's
        last bytes, after which the core is between requests (or closed) again."""
        length = self._length
        size = len(data)
        if self._state is not _LENGTH or not 0 < size <= length.remaining:
            raise LocalProtocolError("receive_body outside a counted body", 500)
        if size < length.remaining:
            length.remaining -= size
            return [Data(data)]
        length.remaining = 0
        self._body_complete(b"")
        return [Data(data), EndOfMessage()]

    def resume_after_declined_upgrade(self) -> list[Event]:
        """The caller will not switch protocols: parse ``trailing_data`` as HTTP/1.1.

        Valid once a ``Request`` with ``upgrade`` set has been returned (even before its
        body is complete). Returns the events those bytes complete.
        """
        if self._error is not None:
            self._fail(self._error, [])
        if self._state is _UPGRADE_BODY:
            # The rest of the body is still to come: let a fresh parser frame it.
            self._parser = HttpRequestParser(self._callbacks)
            self._feed_synthetic_head(b"Content-Length: %d\r\n" % self._length.remaining)
        elif self._state is _UPGRADE:
            self._parser = HttpRequestParser(self._callbacks)
            self._state = _IDLE
        else:
            raise LocalProtocolError("no upgrade is pending", 500)
        data, self.trailing_data = self.trailing_data, b""
        return self.receive_data(data) if data else []

    # -- feeding ------------------------------------------------------------------------

    def _take_plain_heads(self, data: bytes, parse_head: _ParseHead) -> bytes:
        """Take the complete plain requests at the start of ``data`` in one native call
        per head (see preforkd/native/_h1head.c for what "plain" means: no chunked body,
        upgrade, expectation or anything else llhttp's callbacks would have to decide).
        Returns the bytes llhttp must still parse, from the first head the native parser
        declined, or b"" once a body goes on past ``data``."""
        limits = self._limits
        events = self._events
        pos = 0
        while True:
            head = parse_head(
                data, pos, limits.max_request_line, self._field_limit, self._max_fields
            )
            if head is None:
                return data[pos:] if pos else data
            method, target, version, headers, host_count, host, keep_alive, length, pos = head
            if host_count != 1 or host not in _valid_hosts:
                self._host_count, self._host = host_count, host
                self._check_host(version)  # the same Host rules as on_headers_complete
            request = Request(
                method, target, version, headers, keep_alive, False, bool(length), length
            )
            self._request = request
            self._keep_alive = keep_alive
            events.append(request)
            if length:
                # The body is counted as llhttp's path counts a Content-Length body.
                self._length.start(length)
                self._state = _LENGTH
                data = self._receive_length(data, pos)
                if self._state is not _IDLE or not data:
                    return b""
                pos = 0
                continue
            events.append(EndOfMessage())
            if not keep_alive:
                self._state = _CLOSED  # RFC 9112 §9.6: what follows is not read
                return b""
            if pos == len(data):
                return b""

    def _stand_in_method(self, data: bytes) -> bytes:
        """The bytes to feed llhttp at the start of a request: with a method llhttp does
        not know replaced by our stand-in (remembered in ``_method``). Returns b"" while
        the method is still incomplete (held back, bounded by ``_MAX_METHOD``)."""
        if data.startswith(_COMMON_METHODS) and not self._held:
            return data  # the common case (receive_data checks it before calling us)
        data = self._held + data if self._held else data
        self._held = b""
        start = 0
        while data.startswith(b"\r\n", start):  # RFC 9112 §2.2: empty lines before it
            start += 2
        space = data.find(b" ", start, start + _MAX_METHOD + 1)
        if space == -1:
            if len(data) - start <= _MAX_METHOD and _TOKEN_RE.fullmatch(data, start):
                self._held = data
                return b""
            return data  # no method we could take: llhttp judges it
        method = data[start:space]
        if method in _LLHTTP_METHODS or not _TOKEN_RE.fullmatch(method):
            return data
        self._method = method.decode("ascii")
        return data[:start] + _STAND_IN + data[space:]

    def _run_parser(self, data: bytes) -> None:
        while True:
            # Where the first message in this buffer starts (inline: once per read).
            self._buf = data
            state = self._state
            self._start = 0 if state is _IDLE else _EARLIER if state is _HEAD else _UNKNOWN
            try:
                self._parser.feed_data(data)
                if self._state is _IDLE or self._state is _CLOSED:
                    self._buf = b""  # between requests: nothing to carry to the next read
                else:
                    self._end_buffer()
                return
            except HttpParserUpgrade as exc:
                rest = self._after_llhttp_pause(data[exc.args[0] :])
            except HttpParserCallbackError as exc:
                if not isinstance(exc.__context__, _TakeOver):
                    raise
                rest = self._take_over_body(data, exc.__context__.args[0])
            if not rest:
                return
            data = rest

    # -- message boundaries, and chunked bodies ---------------------------------------

    def _end_buffer(self) -> None:
        """llhttp took the whole buffer in the middle of a message: carry what the next
        buffer needs to know."""
        buf = self._buf
        if self._state is _HEAD:
            start = self._start = self._resolve(self._start)
            if start >= 0:
                start = _skip_empty_lines(buf, start)
                self._tail = buf[max(start, len(buf) - 3) :]
            elif start == _EARLIER and self._tail is not None:
                self._tail = (self._tail + buf)[-3:]
            else:
                self._tail = None
        next_start = self._resolve(self._next_start)
        if next_start >= 0:
            next_start = max(_UNKNOWN, next_start - len(buf))
        self._next_start = next_start
        self._buf = b""

    def _resolve(self, offset: _Offset) -> int:
        """Work out a deferred message start: each message before it in this buffer ends
        where its head ends plus its body length (oldest first; iterative, as a buffer
        may hold thousands of pipelined requests)."""
        lengths = []
        while type(offset) is tuple:
            offset, length = offset
            lengths.append(length)
        start = offset
        assert type(start) is int
        for length in reversed(lengths):
            head_end = self._head_end(start)
            if head_end is None:
                return _UNKNOWN
            start = head_end + length
        return start

    def _head_end(self, start: int) -> int | None:
        """Offset in the current buffer just after the head of the message that starts at
        ``start``.

        llhttp (strict) allows no CR or LF inside a request line or field, so the head
        ends at the first CRLFCRLF after the message's start (past any empty lines before
        it, RFC 9112 §2.2)."""
        buf = self._buf
        if start >= 0:
            end = buf.find(b"\r\n\r\n", _skip_empty_lines(buf, start))
            return None if end == -1 else end + 4
        if start == _EARLIER and self._tail is not None:
            tail = self._tail
            end = (tail + buf[:4096]).find(b"\r\n\r\n")
            if end == -1:
                end = buf.find(b"\r\n\r\n")
                return None if end == -1 else end + 4
            return end + 4 - len(tail)
        return None

    def _take_over_body(self, data: bytes, head_end: int) -> bytes:
        """llhttp stopped after a request's head (``data[:head_end]``): frame its body
        ourselves. Returns the bytes after the body, for a fresh parser."""
        self._parser = HttpRequestParser(self._callbacks)  # the next message's
        self._buf = b""
        if self._state is _LENGTH:
            data = self._receive_length(data, head_end)
        else:
            data = self._receive_chunked(data[head_end:])
        if data and self._state is _IDLE:
            data = self._stand_in_method(data)
        return data

    def _receive_length(self, data: bytes, start: int = 0) -> bytes:
        """Count a Content-Length body down from ``data[start:]``; returns the bytes after
        it once it is complete."""
        rest = self._length.feed(data, start, self._events)
        return b"" if rest is None else self._body_complete(rest)

    def _receive_chunked(self, data: bytes) -> bytes:
        """Feed the chunked body; returns the bytes after it once it is complete."""
        chunked = self._chunked
        assert chunked is not None
        rest = chunked.feed(data, 0, self._events)
        if rest is None:
            return b""
        self._chunked = None
        return self._body_complete(rest)

    def _body_complete(self, rest: bytes) -> bytes:
        """A body we framed has ended (EndOfMessage is out): ``rest`` is the next request's."""
        self._headers = []
        if not self._keep_alive:
            self._state = _CLOSED  # RFC 9112 §9.6: what follows is not read
            return b""
        self._state = _IDLE
        return rest

    def _after_llhttp_pause(self, rest: bytes) -> bytes:
        """llhttp stopped after the head of an upgrade or CONNECT request.

        httptools tells llhttp to skip the body of such a request and to stop right after
        its head. ``rest`` are the bytes after the head. Returns the bytes to parse next as
        HTTP/1.1 with a fresh parser (b"" when parsing stops here).
        """
        skipped, self._body_skipped = self._body_skipped, False
        request = self._request
        assert request is not None
        if request.upgrade is not None:
            # The caller decides whether to switch; the body (Content-Length only, see
            # _on_headers_complete) is delivered first, then bytes collect in trailing_data.
            self.trailing_data = b""
            if skipped:
                self._state = _UPGRADE_BODY
                self._length.start(request.content_length or 0)
                self._receive_upgrade_body(rest)
            else:
                self._state = _UPGRADE
                self.trailing_data = rest
            return b""
        if self._state is _CLOSED:
            return b""
        # No protocol switch on offer (CONNECT, HTTP/1.0, chunked body): go on with HTTP/1.1.
        self._parser = HttpRequestParser(self._callbacks)
        if skipped:
            if request.content_length is None:
                self._feed_synthetic_head(b"Transfer-Encoding: chunked\r\n")
            else:
                self._feed_synthetic_head(b"Content-Length: %d\r\n" % request.content_length)
        return rest

    def _feed_synthetic_head(self, framing: bytes) -> None:
        """Put a fresh parser in the body of the current request, framed by ``framing``.

        The head's callbacks see ``_synthetic`` and emit nothing; the body, trailers and
        end of message that follow are the real request's.
        """
        close = b"" if self._keep_alive else b"Connection: close\r\n"
        self._next_start = _UNKNOWN  # llhttp frames this body; its end is not ours to see
        self._synthetic = True
        self._parser.feed_data(b"PUT / HTTP/1.1\r\nHost: x\r\n" + framing + close + b"\r\n")
        self._state = _BODY
        self._headers = []

    def _receive_upgrade_body(self, data: bytes) -> None:
        # Counted like any Content-Length body; what follows it waits for the caller.
        rest = self._length.feed(data, 0, self._events)
        if rest is not None:
            self._state = _UPGRADE
            self.trailing_data += rest

    def _receive_eof(self) -> list[Event]:
        state = self._state
        if state is _BODY or state is _LENGTH or state is _CHUNKED or state is _UPGRADE_BODY:
            # The app must not mistake a truncated body for a complete one (RFC 9112 §8).
            self._fail(RemoteProtocolError("connection closed in the middle of a body"), [])
        if state is _State.EOF:
            return []
        # Between requests, or in a head: there is no request to answer (RFC 9112 §9.6).
        self._state = _State.EOF
        return [ConnectionClosed()]

    def _fail(self, error: RemoteProtocolError, events: list[Event]) -> NoReturn:
        self._state = _State.ERROR
        self._error = error
        raise H1ProtocolError(str(error), error.status, events) from error

    def _translate(self, exc: HttpParserError) -> RemoteProtocolError:
        if self._pending_error is not None:
            return self._pending_error
        if isinstance(exc, HttpParserCallbackError) and exc.__context__ is not None:
            raise exc.__context__  # a bug in a callback, not bad input: let it surface
        reason = str(exc)
        return RemoteProtocolError(reason, _LLHTTP_STATUS.get(reason, 400))

    def _reject(self, message: str, status: int = 400) -> RemoteProtocolError:
        """Record the error a callback is about to raise (httptools wraps it)."""
        self._pending_error = error = RemoteProtocolError(message, status)
        return error

    # -- llhttp callbacks ---------------------------------------------------------------

    def _on_message_begin(self) -> None:
        self._state = _HEAD
        self._url = b""
        self._headers = []
        self._host_count = 0
        self._host = None
        self._content_length = None
        self._transfer_encoding = None
        self._expect = None
        self._upgrade = None

    def _on_url(self, piece: bytes) -> None:
        # llhttp hands over the target in pieces as it arrives, so an over-long request
        # line is refused before it is buffered whole (RFC 9112 §3: 414).
        url = self._url = self._url + piece
        if len(url) > self._target_hint:
            method = self._method or self._parser.get_method()
            line = len(method) + len(url) + len("  HTTP/1.1")
            if line > self._limits.max_request_line:
                raise self._reject("request line too long", 414)

    def _on_header(self, name: bytes, value: bytes) -> None:
        # httptools calls this once a whole field has arrived. After the head the fields
        # are trailer fields (RFC 9112 §7.1.2): _on_headers_complete has swapped in a list
        # that only counts them, so they are limited the same way and then dropped.
        if len(name) + len(value) > self._field_limit:
            raise self._reject("header field too large", _TOO_LARGE)
        # llhttp has checked the syntax (RFC 9110 §5.1, §5.5): a token name directly before
        # ":" (so no "Host :", RFC 9112 §5.1), no CR, LF, NUL or other CTL in the value, no
        # obs-fold (RFC 9112 §5.2 lets us reject it). It strips leading OWS, not trailing.
        key = _field_names.get(name)
        if key is None:
            key = name.decode("latin-1").lower()
            if len(_field_names) < _CACHE_MAX:
                _field_names[name] = key
        text = value.rstrip(b" \t").decode("latin-1")
        if key == _HOST:  # in every request: inline
            self._host_count += 1
            self._host = text
        elif key in _WATCHED_FIELDS:
            self._watch(key, text)
        headers = self._headers
        headers.append((key, text))
        if len(headers) > self._max_fields:
            raise self._reject("too many header fields", _TOO_LARGE)

    def _watch(self, key: str, value: str) -> None:
        # (Host is counted in _on_header itself.)
        if key == _CL:
            self._content_length = value  # llhttp rejects a second one, even identical
        elif key == _TE:
            if self._transfer_encoding is None:
                self._transfer_encoding = [value]
            else:
                self._transfer_encoding.append(value)
        elif key == _EXPECT:
            self._expect = value
        else:
            self._upgrade = value

    def _on_headers_complete(self) -> None:
        if self._synthetic:
            self._synthetic = False
            return
        parser = self._parser
        version = parser.get_http_version()
        if version != "1.1" and version != "1.0":
            # 0.9 and 2.0 parse, but we speak HTTP/1.x only (RFC 9110 §15.6.6).
            raise self._reject(f"HTTP/{version} is not supported", 505)
        if self._method is not None:
            method, self._method = self._method, None
        else:
            raw_method = parser.get_method()
            if raw_method in _NON_HTTP_METHODS:
                raise self._reject("not an HTTP method")
            method = raw_method.decode("ascii")
        target = self._url.decode("latin-1")  # llhttp allows ASCII only
        if target[:1] != "/" or "#" in target or method == "CONNECT":
            self._check_target(method, target)  # the common origin-form needs no more
        if self._host_count != 1 or self._host not in _valid_hosts:
            self._check_host(version)
        if self._transfer_encoding is None and self._content_length is None:
            chunked, length = False, None  # RFC 9112 §6.3 item 7: no body
        else:
            chunked, length = self._framing(version)
        keep_alive = parser.should_keep_alive()  # RFC 9112 §9.3 (HTTP/1.0: "keep-alive")
        upgrade = None
        upgrading = parser.should_upgrade()
        if upgrading:
            # llhttp saw "Upgrade" + "Connection: upgrade" (RFC 9110 §7.8), or CONNECT.
            # httptools then skips the body; _after_llhttp_pause delivers it instead.
            self._body_skipped = chunked or bool(length)
            upgrade = self._upgrade_token(method, version, keep_alive, chunked)
        expect = self._expect
        request = Request(  # positional (cheaper than keywords): the fields in order
            method,
            target,
            version,
            self._headers,
            keep_alive,
            # RFC 9110 §10.1.1: a 100-continue expectation in an HTTP/1.0 request MUST be
            # ignored. Other expectations are ignored as well (we never answer 417).
            expect is not None and version == "1.1" and expect.lower() == "100-continue",
            chunked or bool(length),  # has_body
            length,  # content_length
            0,  # stream_id
            upgrade,
        )
        self._request = request
        self._keep_alive = keep_alive
        self._events.append(request)
        self._state = _BODY
        self._headers = []  # from here on, it collects trailer fields (see _on_header)
        if upgrading:
            self._next_start = _UNKNOWN
        elif not chunked:
            if length:
                self._frame_length(length)
            else:
                # The next message starts right after this head: worked out only if it
                # turns out to be needed (see _resolve).
                self._next_start = (self._start, 0)
        elif (head_end := self._head_end(self._resolve(self._start))) is None:
            self._next_start = _UNKNOWN  # lost track: llhttp decodes this chunked body
        else:
            # RFC 9112 §7.1.1 allows whitespace in chunk extensions that llhttp refuses:
            # the body is decoded by proto/chunked.py, from the end of this head.
            limits = self._limits
            self._chunked = ChunkedBody(
                limits.max_header_field_size, limits.max_header_fields, self._field_limit
            )
            self._state = _CHUNKED
            raise _TakeOver(head_end)

    def _frame_length(self, length: int) -> None:
        """Decide who frames a Content-Length body: llhttp if it ends in this buffer (one
        on_body call), else we do (_receive_length). llhttp would copy every read of the
        body into a new bytes object through a Python callback; we pass each read on as
        it came, which for a large upload saves a copy of every byte."""
        start = self._start = self._resolve(self._start)
        head_end = self._head_end(start)
        if head_end is None:
            self._next_start = _UNKNOWN  # lost track: llhttp frames this body
        elif head_end + length <= len(self._buf):
            self._next_start = head_end + length
        else:
            self._length.start(length)
            self._state = _LENGTH
            raise _TakeOver(head_end)

    def _on_body(self, data: bytes) -> None:
        self._events.append(Data(data))

    def _on_message_complete(self) -> None:
        if self._body_skipped:
            return  # see _after_llhttp_pause
        self._start, self._next_start = self._next_start, _UNKNOWN
        self._events.append(EndOfMessage())
        self._state = _IDLE if self._keep_alive else _CLOSED

    # -- request checks -----------------------------------------------------------------

    def _check_target(self, method: str, target: str) -> None:
        # RFC 9112 §3.2: the four forms of request-target and which method may use which.
        if not target:
            raise self._reject("empty request target")
        if method == "CONNECT":
            if _AUTHORITY_RE.fullmatch(target) is None:
                raise self._reject("CONNECT needs an authority-form target")  # §3.2.3
        elif "#" in target:
            # No request-target form has a fragment (§3.2.1-3.2.2); llhttp lets it through.
            raise self._reject("fragment in request target")
        elif target[0] == "/":
            return  # origin-form, §3.2.1 (llhttp has checked the characters)
        elif target[0] == "*":
            if target != "*" or method != "OPTIONS":
                raise self._reject("asterisk-form is for OPTIONS only")  # §3.2.4
        elif "://" not in target:
            # absolute-form, §3.2.2; llhttp insists on "scheme://" already.
            raise self._reject("invalid request target")
        else:
            authority = absolute_form_authority(target)
            if "@" in authority:
                # RFC 9110 §4.2.4: a sender MUST NOT send userinfo in an http(s) URI, and
                # a recipient SHOULD treat it as an error: it would pass for the host.
                raise self._reject("userinfo in request target")
            if not authority or _HOST_RE.fullmatch(authority) is None:
                raise self._reject("invalid authority in request target")

    def _check_host(self, version: str) -> None:
        # RFC 9112 §3.2: a server MUST answer 400 to an HTTP/1.1 request without Host, and
        # to any request with more than one Host field or an invalid Host value.
        count = self._host_count
        if count != 1:
            if count > 1:
                raise self._reject("more than one Host field")
            if version == "1.1":
                raise self._reject("missing Host field")
        elif _HOST_RE.fullmatch(self._host or "") is None:
            raise self._reject("invalid Host field")
        elif len(_valid_hosts) < _CACHE_MAX:
            _valid_hosts.add(self._host or "")

    def _framing(self, version: str) -> tuple[bool, int | None]:
        """Return (chunked, content_length) for a request with TE or CL (the caller
        handles the common case of neither: no body, RFC 9112 §6.3 item 7)."""
        te = self._transfer_encoding
        if te is None:
            raw = self._content_length
            assert raw is not None
            if not is_content_length(raw):  # llhttp has checked 1*DIGIT already
                raise self._reject("invalid Content-Length")
            return False, int(raw)
        if version == "1.0":
            # RFC 9112 §6.1: Transfer-Encoding in HTTP/1.0 means the framing is faulty.
            raise self._reject("Transfer-Encoding in an HTTP/1.0 request")
        if self._content_length is not None:
            # RFC 9112 §6.1 lets a server reject CL + TE, the CL.TE/TE.CL smuggling pair.
            raise self._reject("both Content-Length and Transfer-Encoding")
        codings = [c.strip().lower() for c in ",".join(te).split(",")]
        if codings[-1] != "chunked" or codings.count("chunked") != 1:
            # RFC 9112 §6.3 item 4: chunked not final means the length cannot be
            # determined: MUST answer 400. Chunked twice is forbidden by §6.1.
            raise self._reject("chunked must be the final and only chunked coding")
        if len(codings) > 1:
            # RFC 9112 §6.1: a coding we do not understand SHOULD get 501.
            raise self._reject("unsupported transfer coding", 501)
        return True, None

    def _upgrade_token(
        self, method: str, version: str, keep_alive: bool, chunked: bool
    ) -> str | None:
        # RFC 9110 §7.8: a server MUST ignore Upgrade in an HTTP/1.0 request and MAY ignore
        # it otherwise. We ignore it on a chunked body (we could not hand the caller the
        # bytes after that body without decoding it ourselves) and with "Connection: close".
        value = self._upgrade
        if value is None or method == "CONNECT" or version != "1.1" or chunked:
            return None
        if not keep_alive:
            return None
        token = value.split(",", 1)[0].strip().lower()  # the client's first preference
        return token or None


class _Callbacks:
    """The callback object httptools calls (it looks the methods up once, at creation)."""

    __slots__ = (
        "on_body",
        "on_header",
        "on_headers_complete",
        "on_message_begin",
        "on_message_complete",
        "on_url",
    )

    def __init__(self, conn: H1Connection) -> None:
        self.on_message_begin = conn._on_message_begin
        self.on_url = conn._on_url
        self.on_header = conn._on_header
        self.on_headers_complete = conn._on_headers_complete
        self.on_body = conn._on_body
        self.on_message_complete = conn._on_message_complete
