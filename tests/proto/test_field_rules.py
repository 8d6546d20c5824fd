"""One set of field rules for both protocols (proto/fields.py): a Host value, a method or a
Content-Length that one core refuses, the other refuses too.

The only differences are the ones the protocols themselves make, named where they apply.
"""

from __future__ import annotations

import pytest

from preforkd.errors import RemoteProtocolError
from preforkd.proto.events import Request
from preforkd.proto.h1 import H1Connection

from .h2_helpers import RawClient

# With the native head parser and with llhttp alone (tests/proto/conftest.py).
pytestmark = pytest.mark.usefixtures("h1_head_parser")

HOSTS = [
    "example.com",
    "example.com:8080",
    "[::1]:443",
    "10.0.0.1",
    "xn--bcher-kva.example",
    "a_b.example",
    "user@example.com",  # userinfo: RFC 9110 §4.2.4, RFC 9113 §8.3.1
    "exa mple.com",
    "example.com:80x",
    "[::1",
    "example.com/path",
]
METHODS = ["GET", "PURGE", "X-CUSTOM", "M!#$%&'*+-.^_`|~"]
LENGTHS = ["0", "12", "012", "-1", "1.0", "0x10", "١٢"]  # the last: Arabic-Indic digits


def _h1_accepts(head: str) -> bool:
    try:
        events = H1Connection().receive_data(head.encode("utf-8") + b"\r\n\r\n")
    except RemoteProtocolError:
        return False
    return any(isinstance(e, Request) for e in events)


def _h2_accepts(fields: list[tuple[str, str]], end_stream: bool = True) -> bool:
    raw = RawClient()
    events = raw.send(raw.headers(1, fields, end_stream=end_stream))
    return any(isinstance(e, Request) for e in events)


@pytest.mark.parametrize("host", HOSTS)
def test_host_values_judged_alike(host: str) -> None:
    h1 = _h1_accepts(f"GET / HTTP/1.1\r\nHost: {host}")
    fields = [(":method", "GET"), (":scheme", "https"), (":path", "/"), (":authority", host)]
    assert _h2_accepts(fields) == h1


def test_an_empty_host_is_http1_only() -> None:
    # RFC 9112 §3.2 allows an empty Host (a URI without authority); RFC 9113 §8.3.1 wants
    # :authority to name the target host, and an empty one cannot.
    assert _h1_accepts("GET / HTTP/1.1\r\nHost: ")
    fields = [(":method", "GET"), (":scheme", "https"), (":path", "/"), (":authority", "")]
    assert not _h2_accepts(fields)


@pytest.mark.parametrize("method", METHODS)
def test_methods_judged_alike(method: str) -> None:
    h1 = _h1_accepts(f"{method} / HTTP/1.1\r\nHost: a")
    fields = [(":method", method), (":scheme", "https"), (":path", "/"), (":authority", "a")]
    assert _h2_accepts(fields) == h1 is True


@pytest.mark.parametrize("length", LENGTHS)
def test_content_lengths_judged_alike(length: str) -> None:
    h1 = _h1_accepts(f"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: {length}")
    fields = [(":method", "POST"), (":scheme", "https"), (":path", "/"), (":authority", "a")]
    fields.append(("content-length", length))
    assert _h2_accepts(fields, end_stream=False) == h1
