"""The field rules of HTTP, one module for both protocol cores (RFC 9110 §5, RFC 9112 §3,
RFC 9113 §8.2-8.3).

Received requests: the grammar of tokens (methods, field names), field values, Host and
:authority, Content-Length, and the connection-specific fields HTTP/2 forbids. Each
grammar is written once and compiled for ``str`` (the HTTP/1.1 core sees llhttp's
strings) and for ``bytes`` (the HTTP/2 core sees HPACK's). Responses: checks of the
names, values, WSGI status and Content-Length an application gives. Valid names and
statuses are memoised (bounded): applications send the same ones over and over. Pure: no
IO.
"""

from __future__ import annotations

import re

from preforkd.errors import LocalProtocolError

_CACHE_MAX = 1024

# RFC 9110 §5.6.2: token = 1*tchar. Methods (§9.1) and field names (§5.1) are tokens.
_TCHAR = r"!#$%&'*+\-.^_`|~0-9A-Za-z"
TOKEN = re.compile(f"[{_TCHAR}]+")
TOKEN_BYTES = re.compile(f"[{_TCHAR}]+".encode())
# RFC 9113 §8.2.1: HTTP/2 field names are lower-case tokens. Upper case, controls, SP,
# ":" and non-ASCII are all outside this set.
LOWER_TOKEN_BYTES = re.compile(f"[{_TCHAR.replace('A-Z', '')}]+".encode())

# RFC 9110 §5.5: CR, LF and NUL are dangerous in a field value and the other CTLs (except
# HTAB) invalid; obs-text (0x80-0xFF) is allowed.
_CTL = r"\x00-\x08\x0a-\x1f\x7f"
_BAD_VALUE_RE = re.compile(f"[{_CTL}]")
# RFC 9113 §8.2.1 adds: no whitespace at either end of a received value.
BAD_VALUE_BYTES = re.compile(f"[{_CTL}]|^[ \t]|[ \t]$".encode())

# RFC 9110 §7.2 / RFC 3986 §3.2.2-3.2.3: Host = uri-host [ ":" port ], the host an
# IP-literal or a reg-name (the empty one allowed in a Host field, RFC 9112 §3.2).
_IP_LITERAL = r"\[[0-9A-Za-z:.\-_~!$&'()*+,;=]+\]"
_REG_NAME = r"[0-9A-Za-z\-._~%!$&'()*+,;=]"
HOST = re.compile(f"(?:{_IP_LITERAL}|{_REG_NAME}*)(?::[0-9]*)?")
# The same with a non-empty host (RFC 9110 §4.2.1): HTTP/2 :authority and Host, where no
# "@" (userinfo) is allowed either (RFC 9113 §8.3.1).
HOST_BYTES = re.compile(f"(?:{_IP_LITERAL}|{_REG_NAME}+)(?::[0-9]*)?".encode())
# RFC 9112 §3.2.3: authority-form (CONNECT only) is uri-host ":" port, port required.
CONNECT_AUTHORITY = re.compile(f"(?:{_IP_LITERAL}|{_REG_NAME}+):[0-9]+")

# RFC 9113 §8.2.2: connection-specific fields make an HTTP/2 message malformed (and an
# application's are dropped from responses on both protocols).
CONNECTION_FIELDS = frozenset(
    (b"connection", b"keep-alive", b"proxy-connection", b"transfer-encoding", b"upgrade")
)


def is_content_length(value: str | bytes) -> bool:
    """RFC 9110 §8.6: Content-Length = 1*DIGIT (``str.isdigit`` alone would accept "²")."""
    return value.isascii() and value.isdigit()


# RFC 9112 §4: status-line = HTTP-version SP status-code SP [ reason-phrase ].
_STATUS_RE = re.compile(r"([1-5][0-9][0-9])(?: [\t\x20-\x7e\x80-\xff]*)?")

valid_names: set[str] = set()
valid_statuses: dict[str, tuple[int, str]] = {}  # status -> (code, status line)


def check_status(status: str) -> tuple[int, str]:
    if type(status) is not str or _STATUS_RE.fullmatch(status) is None:
        raise LocalProtocolError(f"invalid status {status!r}", 500)
    # The SP after the code is required even without a reason phrase (RFC 9112 §4).
    result = int(status[:3]), f"HTTP/1.1 {status if len(status) > 3 else status + ' '}\r\n"
    if len(valid_statuses) < _CACHE_MAX:
        valid_statuses[status] = result
    return result


def check_name(name: object) -> None:
    if type(name) is not str or TOKEN.fullmatch(name) is None:
        raise LocalProtocolError(f"invalid header name {name!r}", 500)
    if len(valid_names) < _CACHE_MAX:
        valid_names.add(name)


def check_value(name: str, value: object) -> None:
    if type(value) is not str or _BAD_VALUE_RE.search(value) is not None:
        raise LocalProtocolError(f"invalid value for header {name!r}: {value!r}", 500)


def content_length(value: str, previous: int | None) -> int:
    text = value.strip()
    if not is_content_length(text):
        raise LocalProtocolError(f"invalid Content-Length {value!r}", 500)
    length = int(text)
    if previous is not None and previous != length:
        raise LocalProtocolError("conflicting Content-Length values", 500)
    return length
