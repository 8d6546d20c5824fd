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
