"""The PROXY protocol header parser (proto/proxy.py), v1 and v2, without a socket."""

from __future__ import annotations

import ipaddress
import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from preforkd.proto.proxy import (
    V1_MAX,
    V2_MAX_LENGTH,
    V2_SIGNATURE,
    ProxyHeader,
    ProxyHeaderError,
    parse_proxy_header,
)

V1 = b"PROXY TCP4 203.0.113.7 192.0.2.1 51234 443\r\n"


def v2(
    command: int = 1, family: int = 1, transport: int = 1, addresses: bytes | None = None,
    tlvs: bytes = b"",
) -> bytes:  # fmt: skip
    if addresses is None:
        addresses = (
            ipaddress.ip_address("203.0.113.7").packed + ipaddress.ip_address("192.0.2.1").packed
            + struct.pack("!HH", 51234, 443)
        )  # fmt: skip
    body = addresses + tlvs
    return V2_SIGNATURE + bytes([0x20 | command, family << 4 | transport]) + struct.pack(
        "!H", len(body)
    ) + body  # fmt: skip


def test_v1_tcp4_and_what_follows_is_not_taken() -> None:
    header = parse_proxy_header(V1 + b"GET / HTTP/1.1\r\n")
    assert header == ProxyHeader(1, len(V1), ("203.0.113.7", 51234), ("192.0.2.1", 443))


def test_v1_tcp6_and_unknown() -> None:
    line = b"PROXY TCP6 2001:db8::7 2001:db8::1 65535 0\r\n"
    assert parse_proxy_header(line) == ProxyHeader(
        1, len(line), ("2001:db8::7", 65535), ("2001:db8::1", 0)
    )
    unknown = b"PROXY UNKNOWN ffff:f...f:ffff 1 2 3\r\n"
    assert parse_proxy_header(unknown + b"rest") == ProxyHeader(1, len(unknown))
    assert parse_proxy_header(b"PROXY UNKNOWN\r\n") == ProxyHeader(1, 15)


@pytest.mark.parametrize(
    "line",
    [
        b"PROXY TCP4 203.0.113.7 192.0.2.1 51234\r\n",  # a field missing
        b"PROXY TCP4 203.0.113.7 192.0.2.1 51234 443 extra\r\n",
        b"PROXY TCP4 2001:db8::1 192.0.2.1 1 2\r\n",  # IPv6 under TCP4
        b"PROXY TCP6 203.0.113.7 2001:db8::1 1 2\r\n",
        b"PROXY TCP4 203.0.113.300 192.0.2.1 1 2\r\n",
        b"PROXY TCP4 203.0.113.7 192.0.2.1 65536 443\r\n",
        b"PROXY TCP4 203.0.113.7 192.0.2.1 -1 443\r\n",
        b"PROXY TCP4 203.0.113.7 192.0.2.1 \xd9\xa1 443\r\n",  # not ASCII
        b"PROXY TCP4  203.0.113.7 192.0.2.1 1 2\r\n",  # two spaces
        b"PROXY UDP4 203.0.113.7 192.0.2.1 1 2\r\n",
        b"PROXY TCP4 203.0.113.7 192.0.2.1 1 2\n",  # LF alone
        b"PROXY TCP4 203.0.113.7\r192.0.2.1 1 2\r\n",
        b"PROXY " + b"x" * V1_MAX,  # no CRLF within the longest line
        b"PROXX TCP4",
        b"GET / HTTP/1.1\r\n\r\n",  # no header at all
        b"\x16\x03\x01\x02\x00",  # a TLS ClientHello
    ],
)
def test_malformed_headers_are_refused(line: bytes) -> None:
    with pytest.raises(ProxyHeaderError):
        parse_proxy_header(line)


def test_v2_inet_inet6_and_tlvs() -> None:
    header = v2(tlvs=b"\x04\x00\x02ab")  # a TLV after the addresses: skipped
    assert parse_proxy_header(header + b"\x16\x03") == ProxyHeader(
        2, len(header), ("203.0.113.7", 51234), ("192.0.2.1", 443)
    )
    six = (
        ipaddress.ip_address("2001:db8::7").packed + ipaddress.ip_address("2001:db8::1").packed
        + struct.pack("!HH", 1, 2)
    )  # fmt: skip
    assert parse_proxy_header(v2(family=2, addresses=six)) == ProxyHeader(
        2, 16 + 36, ("2001:db8::7", 1), ("2001:db8::1", 2)
    )


def test_v2_without_an_address_uses_the_peer() -> None:
    local = v2(command=0, family=0, transport=0, addresses=b"")
    assert parse_proxy_header(local) == ProxyHeader(2, 16)
    unspec = v2(family=0, transport=0, addresses=b"")
    assert parse_proxy_header(unspec) == ProxyHeader(2, 16)
    unix = v2(family=3, addresses=b"\x00" * 216)
    assert parse_proxy_header(unix) == ProxyHeader(2, 16 + 216)


@pytest.mark.parametrize(
    "header",
    [
        v2()[:12] + bytes([0x11, 0x11]) + v2()[14:],  # version 1 in a v2 header
        v2(command=2),
        v2(family=4),
        v2(transport=2),  # a datagram
        v2(addresses=b"\x00" * 8),  # too short for two IPv4 addresses and ports
        V2_SIGNATURE + bytes([0x21, 0x11]) + struct.pack("!H", V2_MAX_LENGTH + 1),
        b"\r\n\r\n\x00\r\nQUIX",
    ],
)
def test_malformed_v2_headers_are_refused(header: bytes) -> None:
    with pytest.raises(ProxyHeaderError):
        parse_proxy_header(header)


@pytest.mark.parametrize("header", [V1, v2(), v2(family=0, transport=0, addresses=b"")])
def test_every_prefix_is_incomplete_and_all_header(header: bytes) -> None:
    """What makes reading safe: until the header is complete, every byte seen is part
    of it, so the reader may take them all off the socket."""
    for end in range(len(header)):
        assert parse_proxy_header(header[:end]) is None
    parsed = parse_proxy_header(header)
    assert parsed is not None and parsed.length == len(header)


@given(st.binary(max_size=300))
def test_any_bytes_give_a_header_more_or_an_error(data: bytes) -> None:
    try:
        header = parse_proxy_header(data)
    except ProxyHeaderError:
        return
    if header is not None:
        assert 0 < header.length <= len(data)
        assert data[: header.length].startswith((b"PROXY ", V2_SIGNATURE))


@given(st.sampled_from([V1, v2()]), st.binary(max_size=50))
def test_the_stream_after_a_header_is_never_part_of_it(header: bytes, rest: bytes) -> None:
    parsed = parse_proxy_header(header + rest)
    assert parsed is not None and parsed.length == len(header)
