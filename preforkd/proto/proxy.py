"""The PROXY protocol header, versions 1 and 2: who the client is, behind a TCP proxy.

A layer-4 proxy or load balancer (haproxy ``send-proxy``/``send-proxy-v2``, AWS NLB, nginx
``proxy_protocol on`` in its stream module) opens its own connection to us, so the peer
address we see is the proxy's. With the PROXY protocol it first sends one header naming
the client's address and port; then the client's bytes follow untouched (the TLS
handshake, or HTTP). The specification is haproxy's ``proxy-protocol.txt``; section
numbers below are its.

:func:`parse_proxy_header` is pure: it takes the bytes received so far and returns the
header once complete, ``None`` while every byte seen so far still belongs to it (so the
caller may consume them all without eating into the stream), or raises
:class:`ProxyHeaderError`.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

V1_PREFIX = b"PROXY "
V1_MAX = 107  # §2.1: the longest v1 line, CRLF included
V2_SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"  # §2.2: 12 bytes no HTTP/1 request can begin with
V2_FIXED = 16  # signature, version/command, family/protocol, length
# §2.2 allows up to 65535 bytes of addresses and TLVs; real proxies send a few hundred
# (AWS adds a VPC endpoint id, haproxy an SSL summary). A bound keeps a hostile peer from
# making us buffer 64 KiB before it is refused.
V2_MAX_LENGTH = 4096
_V2_ADDRESS_SIZES = {1: 12, 2: 36, 3: 216}  # INET, INET6, UNIX (§2.2)
_V2_LOCAL, _V2_PROXY = 0x0, 0x1
_STREAM = 0x1


class ProxyHeaderError(ValueError):
    """The bytes are not a valid PROXY protocol header; the reason says why."""


@dataclass(frozen=True, slots=True)
class ProxyHeader:
    """A complete header. ``client`` is None when it carries no address (v1 UNKNOWN, v2
    LOCAL or an unspecified family): the connection's own peer is then the client."""

    version: int
    length: int  # bytes of the header: the stream starts after them
    client: tuple[str, int] | None = None
    server: tuple[str, int] | None = None


def parse_proxy_header(data: bytes) -> ProxyHeader | None:
    """The header at the start of ``data``; None if more bytes are needed (and every
    byte of ``data`` is part of it); raises ProxyHeaderError."""
    if data[:1] == V1_PREFIX[:1]:
        return _parse_v1(data)
    if data[:1] == V2_SIGNATURE[:1]:
        return _parse_v2(data)
    if not data:
        return None
    raise ProxyHeaderError("no PROXY protocol header (the connection starts with other bytes)")


# --- version 1: one text line (§2.1) -------------------------------------------------------


def _parse_v1(data: bytes) -> ProxyHeader | None:
    if not data.startswith(V1_PREFIX[: len(data)]):
        raise ProxyHeaderError("not a PROXY protocol header")
    end = data.find(b"\r\n", 0, V1_MAX)
    if end < 0:
        if len(data) >= V1_MAX:
            raise ProxyHeaderError(f"v1 line longer than {V1_MAX} bytes")
        if b"\n" in data or (b"\r" in data[:-1]):
            raise ProxyHeaderError("v1 line not ended by CRLF")
        return None  # the line is not complete yet: all of it is header
    line = data[:end]
    try:
        text = line.decode("ascii")
    except UnicodeDecodeError:
        raise ProxyHeaderError("v1 line is not ASCII") from None
    parts = text.split(" ")
    if len(parts) >= 2 and parts[1] == "UNKNOWN":
        return ProxyHeader(1, end + 2)  # §2.1: the rest of the line is ignored
    if len(parts) != 6 or parts[1] not in ("TCP4", "TCP6"):
        raise ProxyHeaderError(f"v1 line is not PROXY TCP4|TCP6|UNKNOWN ...: {text[:60]!r}")
    _, family, source, destination, source_port, destination_port = parts
    version = 4 if family == "TCP4" else 6
    client = (_v1_address(source, version), _v1_port(source_port))
    server = (_v1_address(destination, version), _v1_port(destination_port))
    return ProxyHeader(1, end + 2, client, server)


def _v1_address(text: str, version: int) -> str:
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        raise ProxyHeaderError(f"v1 address {text[:45]!r} is not an IP address") from None
    if address.version != version:
        raise ProxyHeaderError(f"v1 address {text!r} is not IPv{version}")
    return str(address)


def _v1_port(text: str) -> int:
    if not (text.isdigit() and text.isascii() and len(text) <= 5 and int(text) <= 65535):
        raise ProxyHeaderError(f"v1 port {text[:8]!r} is not a number from 0 to 65535")
    return int(text)


# --- version 2: binary (§2.2) ------------------------------------------------------------


def _parse_v2(data: bytes) -> ProxyHeader | None:
    if not data.startswith(V2_SIGNATURE[: len(data)]):
        raise ProxyHeaderError("not a PROXY protocol header")
    if len(data) < V2_FIXED:
        return None
    version, command = data[12] >> 4, data[12] & 0x0F
    if version != 2:
        raise ProxyHeaderError(f"v2 header with version {version}")
    if command not in (_V2_LOCAL, _V2_PROXY):
        raise ProxyHeaderError(f"v2 header with unknown command {command}")
    length = int.from_bytes(data[14:16], "big")
    if length > V2_MAX_LENGTH:
        raise ProxyHeaderError(f"v2 header of {length} bytes (at most {V2_MAX_LENGTH})")
    total = V2_FIXED + length
    if len(data) < total:
        return None
    if command == _V2_LOCAL:
        return ProxyHeader(2, total)  # §2.2: a health check by the proxy itself
    family, transport = data[13] >> 4, data[13] & 0x0F
    if family == 0 or family == 3:  # UNSPEC, or a UNIX client: no address we can use
        return ProxyHeader(2, total)
    if family not in _V2_ADDRESS_SIZES:
        raise ProxyHeaderError(f"v2 header with unknown address family {family}")
    if transport != _STREAM:
        raise ProxyHeaderError("v2 header for a datagram or unknown transport")
    if length < _V2_ADDRESS_SIZES[family]:
        raise ProxyHeaderError("v2 header too short for its addresses")
    size = 4 if family == 1 else 16
    body = data[V2_FIXED:total]
    source = ipaddress.ip_address(body[:size])
    destination = ipaddress.ip_address(body[size : 2 * size])
    ports = body[2 * size : 2 * size + 4]
    client = (str(source), int.from_bytes(ports[:2], "big"))
    server = (str(destination), int.from_bytes(ports[2:], "big"))
    return ProxyHeader(2, total, client, server)  # TLVs (§2.2.1) after the ports: ignored
