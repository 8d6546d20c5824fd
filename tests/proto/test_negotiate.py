"""What a cleartext connection is, from its first bytes (proto/negotiate.py)."""

from __future__ import annotations

import pytest

from preforkd.proto.negotiate import is_http1_request


@pytest.mark.parametrize(
    ("data", "verdict"),
    [
        (b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", True),
        (b"FOO /x?y HTTP/1.0\r\n", True),
        (b"INVALID CONNECTION PREFACE\r\n\r\n", False),
        (b"GET / HTTP/2.0\r\n", False),
        (b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\r\n", False),  # TLS on a plain port
        (b"GET / HTTP/1.1", None),  # the line is not complete yet
        (b"x" * 9000, False),  # no line end in 8 KiB: not an HTTP/1.x request
    ],
)
def test_what_an_http2_only_port_answers(data: bytes, verdict: bool | None) -> None:
    assert is_http1_request(data) is verdict
