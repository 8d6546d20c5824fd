"""Checks of response fields an application gives, shared by the HTTP/1.1 and HTTP/2
cores: names, values, the WSGI status and Content-Length. Valid names and statuses are
memoised (bounded): applications send the same ones over and over. Pure: no IO.
"""

from __future__ import annotations

import re

from preforkd.errors import LocalProtocolError

_CACHE_MAX = 1024

# RFC 9110 §5.6.2: field-name = token.
_TOKEN_RE = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
# RFC 9110 §5.5: CR, LF and NUL are dangerous in a field value and the other CTLs (except
# HTAB) invalid; obs-text (0x80-0xFF) is allowed.
_BAD_VALUE_RE = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")
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
    if type(name) is not str or _TOKEN_RE.fullmatch(name) is None:
        raise LocalProtocolError(f"invalid header name {name!r}", 500)
    if len(valid_names) < _CACHE_MAX:
        valid_names.add(name)


def check_value(name: str, value: object) -> None:
    if type(value) is not str or _BAD_VALUE_RE.search(value) is not None:
        raise LocalProtocolError(f"invalid value for header {name!r}: {value!r}", 500)


def content_length(value: str, previous: int | None) -> int:
    text = value.strip()
    # RFC 9110 §8.6: Content-Length = 1*DIGIT (isdigit alone would accept "²").
    if not (text.isascii() and text.isdigit()):
        raise LocalProtocolError(f"invalid Content-Length {value!r}", 500)
    length = int(text)
    if previous is not None and previous != length:
        raise LocalProtocolError("conflicting Content-Length values", 500)
    return length
