"""Parsers and validators for setting values. Each raises ValueError with a reason."""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h)?\s*$")
_UNITS = {None: 1.0, "s": 1.0, "ms": 0.001, "m": 60.0, "h": 3600.0}


def duration(text: str) -> float:
    """'30', '30s', '500ms', '2m' or '1h' to seconds."""
    match = _DURATION.match(text)
    if not match:
        raise ValueError(f"{text!r} is not a duration (examples: 30, 30s, 500ms, 2m)")
    return float(match.group(1)) * _UNITS[match.group(2)]


def octal(text: str) -> int:
    """'022', '0o22' or '18' (a decimal int is accepted only with no leading zero)."""
    value = text.strip().lower()
    try:
        if value.startswith("0o"):
            return int(value[2:], 8)
        if value.startswith("0") and len(value) > 1:
            return int(value[1:], 8)
        return int(value, 10)
    except ValueError:
        raise ValueError(f"{text!r} is not an octal mode (example: 022)") from None


def in_range(low: float, high: float) -> Callable[[float], None]:
    def check(value: float) -> None:
        if not low <= value <= high:
            raise ValueError(f"{value} is out of range ({low:g} to {high:g})")

    return check


def ip_network_or_star(text: str) -> str:
    value = text.strip()
    if value == "*":
        return value
    try:
        ipaddress.ip_network(value, strict=False)
    except ValueError:
        raise ValueError(f"{value!r} is not an IP address, a network or '*'") from None
    return value


def bind_address(text: str) -> str:
    """Syntax check of a bind address; binding itself happens in the master."""
    value = text.strip()
    if value.startswith("unix:"):
        if not value[5:]:
            raise ValueError("unix: needs a path, e.g. unix:/run/preforkd.sock")
        return value
    if value.startswith("fd://"):
        if not value[5:].isdigit():
            raise ValueError(f"{value!r}: fd:// needs a file descriptor number, e.g. fd://3")
        return value
    scheme, sep, _ = value.partition("://")
    if sep and scheme.isalpha():  # "http://127.0.0.1:8000": a URL, not an address
        raise ValueError(
            f"{value!r}: a bind address takes no scheme: HOST:PORT (e.g. 127.0.0.1:8000, "
            "or :8000 for all interfaces), [IPv6]:PORT, unix:PATH or fd://N"
        )
    host, sep, port = value.rpartition(":")
    if not sep:
        raise ValueError(f"{value!r} is not HOST:PORT, [IPv6]:PORT, unix:PATH or fd://N")
    if host.startswith("["):
        if not host.endswith("]"):
            raise ValueError(f"{value!r}: an IPv6 address goes in brackets, e.g. [::1]:8000")
        try:
            ipaddress.IPv6Address(host[1:-1])
        except ValueError:
            raise ValueError(f"{value!r}: {host[1:-1]!r} is not an IPv6 address") from None
    elif ":" in host:
        raise ValueError(f"{value!r}: an IPv6 address goes in brackets, e.g. [::1]:8000")
    if not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"{value!r}: the port must be a number from 0 to 65535")
    return value


def metrics_address(text: str) -> str:
    """HOST:PORT or [IPv6]:PORT: the metrics listener is TCP only."""
    value = bind_address(text)
    if value.startswith(("unix:", "fd://")):
        raise ValueError(f"{value!r}: the metrics listener takes HOST:PORT or [IPv6]:PORT")
    return value


def integer(text: str) -> int:
    """A decimal integer, e.g. '4' (int() alone gives a message users cannot act on)."""
    try:
        return int(text.strip(), 10)
    except ValueError:
        raise ValueError(f"{text!r} is not an integer") from None


_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"0", "false", "no", "off"})


def boolean(text: str) -> bool:
    """'1', 'true', 'yes', 'on' or '0', 'false', 'no', 'off' (any case)."""
    value = text.strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise ValueError(f"{text!r} is not a boolean (use true/false, yes/no, on/off or 1/0)")


def not_empty(values: tuple[str, ...]) -> None:
    if not values:
        raise ValueError("at least one value is required")


# --- Access log format ----------------------------------------------------------------
# The atoms of gunicorn's access log format, written %(atom)s. The access log
# (preforkd.logs) renders each of them; the format is checked here so that a typo is a
# configuration error reported at start-up, not a line full of dashes at run time.
ACCESS_LOG_ATOMS: dict[str, str] = {
    "h": "remote address",
    "l": "'-' (the identd user, never known)",
    "u": "user name from HTTP Basic authentication, or '-'",
    "t": "time the request started, [21/Nov/2026:20:00:00 +0000]",
    "r": "request line, GET /path?query HTTP/1.1",
    "m": "request method",
    "U": "URL path, without the query string",
    "q": "query string",
    "H": "protocol, HTTP/1.1 or HTTP/2",
    "s": "response status",
    "B": "response body size in bytes",
    "b": "response body size in bytes, or '-' when 0",
    "f": "Referer header, or '-'",
    "a": "User-Agent header, or '-'",
    "T": "request time in whole seconds",
    "D": "request time in microseconds",
    "M": "request time in milliseconds",
    "L": "request time in decimal seconds",
    "p": "process id, <1234>",
    "{name}i": "request header 'name', or '-'",
    "{name}o": "response header 'name', or '-'",
}
ACCESS_LOG_JSON = "json"

_FORMAT_TOKEN = re.compile(r"%%|%\((?P<atom>[^()]*)\)s|%")
_HEADER_ATOM = re.compile(r"^\{([!#$%&'*+.^_`|~0-9A-Za-z-]+)\}([io])$")


def split_access_log_format(fmt: str) -> tuple[str, tuple[str, ...]]:
    """Split a %(atom)s format into a %-template with positional ``%s`` and its atoms.

    Header atoms come back with the header name lower-cased, e.g. '{x-request-id}i'.
    Raises ValueError for an unknown atom or a '%' that starts no atom.
    """
    template: list[str] = []
    atoms: list[str] = []
    pos = 0
    for match in _FORMAT_TOKEN.finditer(fmt):
        template.append(fmt[pos : match.start()])
        pos = match.end()
        token, atom = match.group(0), match.group("atom")
        if token == "%%":
            template.append("%%")
            continue
        if atom is None:
            raise ValueError(
                f"stray '%' at position {match.start()} of {fmt!r} "
                "(atoms are written %(h)s; write %% for a literal percent sign)"
            )
        header = _HEADER_ATOM.match(atom)
        if header:
            atom = "{" + header.group(1).lower() + "}" + header.group(2)
        elif atom not in ACCESS_LOG_ATOMS:
            known = " ".join(a for a in ACCESS_LOG_ATOMS if not a.startswith("{"))
            raise ValueError(
                f"unknown access log atom %({atom})s (known: {known}, {{header}}i, {{header}}o)"
            )
        template.append("%s")
        atoms.append(atom)
    template.append(fmt[pos:])
    return "".join(template), tuple(atoms)


def access_log_format(fmt: str) -> None:
    """Validator: 'json' or a format of known %(atom)s atoms."""
    if fmt != ACCESS_LOG_JSON:
        split_access_log_format(fmt)


HTTP_PROTOCOLS = ("h1", "h2")


def http_protocol(text: str) -> str:
    value = text.strip().lower()
    if value not in HTTP_PROTOCOLS:
        raise ValueError(f"{text!r} is not a protocol (h1 or h2)")
    return value


def bind_protocols(text: str) -> str:
    """'ADDRESS=h1', 'ADDRESS=h2' or 'ADDRESS=h1+h2' (the address as given to --bind)."""
    address, sep, protocols = text.strip().rpartition("=")
    if not sep or not address:
        raise ValueError(f"{text!r} is not ADDRESS=PROTOCOLS (e.g. 127.0.0.1:8001=h2)")
    bind_address(address)
    for name in protocols.split("+"):
        http_protocol(name)
    return f"{address}={protocols.strip().lower()}"
