"""Request-target, method and limit rules from outside (issue 9): raw HTTP/1.1 bytes and a
raw HTTP/2 client against a real server, the environ read back from the probe app."""

from __future__ import annotations

import json
import re
import socket
from collections.abc import Callable

import pytest

from preforkd import __version__
from tests.integration.h2client import H2Client
from tests.integration.harness import Preforkd, raw_request

Start = Callable[..., Preforkd]


@pytest.fixture
def server(start_server: Start) -> Preforkd:
    return start_server("probe:app")


def _environ(port: int, request_line: bytes, host: bytes = b"example.com") -> dict[str, str]:
    data = raw_request(
        "127.0.0.1", port, request_line + b"\r\nHost: " + host + b"\r\nConnection: close\r\n\r\n"
    )
    head, _, body = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200"), data[:200]
    return json.loads(body)  # type: ignore[no-any-return]


def _status(data: bytes) -> int:
    return int(data.split(b" ", 2)[1])


def test_userinfo_in_an_absolute_form_target_is_refused(server: Preforkd) -> None:
    assert server.port is not None
    request = (
        b"GET http://user:pass@example.com:8080/environ HTTP/1.1\r\n"
        b"Host: example.com\r\nConnection: close\r\n\r\n"
    )
    assert _status(raw_request("127.0.0.1", server.port, request)) == 400
    assert "userinfo in request target" in server.log()


@pytest.mark.parametrize(
    ("target", "host", "name", "port"),
    [
        (b"http://example.com:8080/environ", "example.com:8080", "example.com", "8080"),
        (b"http://example.com/environ", "example.com", "example.com", "80"),
        (b"http://[::1]:8443/environ?x=1", "[::1]:8443", "[::1]", "8443"),
    ],
)
def test_absolute_form_authority_replaces_host(
    server: Preforkd, target: bytes, host: str, name: str, port: str
) -> None:
    assert server.port is not None
    environ = _environ(server.port, b"GET " + target + b" HTTP/1.1", host=b"other.test")
    assert (environ["HTTP_HOST"], environ["SERVER_NAME"], environ["SERVER_PORT"]) == (
        host,
        name,
        port,
    )
    assert environ["PATH_INFO"] == "/environ"


@pytest.mark.parametrize("method", ["FOOBAR", "get", "BREW-COFFEE", "PROPFIND", "MKCOL"])
def test_any_token_method_reaches_the_application(server: Preforkd, method: str) -> None:
    assert server.port is not None
    environ = _environ(server.port, method.encode() + b" /environ HTTP/1.1")
    assert environ["REQUEST_METHOD"] == method


def test_a_method_split_across_reads_is_still_taken(server: Preforkd) -> None:
    assert server.port is not None
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.sendall(b"FOO")
        sock.sendall(b"BAR /environ HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    assert json.loads(data.partition(b"\r\n\r\n")[2])["REQUEST_METHOD"] == "FOOBAR"


def test_a_method_that_is_no_token_is_still_a_bad_request(server: Preforkd) -> None:
    assert server.port is not None
    data = raw_request("127.0.0.1", server.port, b"FO@O / HTTP/1.1\r\nHost: t\r\n\r\n")
    assert _status(data) == 400


def test_server_software_is_set(server: Preforkd) -> None:
    assert server.port is not None
    environ = _environ(server.port, b"GET /environ HTTP/1.1")
    assert environ["SERVER_SOFTWARE"] == f"preforkd/{__version__}"
    client = H2Client(server.port)
    try:
        response = client.get("/environ")
    finally:
        client.close()
    assert json.loads(bytes(response.body))["SERVER_SOFTWARE"] == f"preforkd/{__version__}"


def test_a_long_query_string_is_within_the_default_limit(server: Preforkd) -> None:
    assert server.port is not None
    query = b"q=" + b"x" * 7000  # ordinary for search and tracking URLs; 414 under 4094
    environ = _environ(server.port, b"GET /environ?" + query + b" HTTP/1.1")
    assert environ["QUERY_STRING"] == query.decode()


def test_http2_applies_the_request_line_and_field_limits(server: Preforkd) -> None:
    assert server.port is not None
    client = H2Client(server.port)
    try:
        assert client.get("/environ?q=" + "x" * 9000).status == 414
        sid = client.request("/environ", headers=[("x-big", "v" * 9000)])
        client.wait(lambda: client.responses[sid].ended)
        assert client.responses[sid].status == 431
        assert client.get("/environ").status == 200  # the connection keeps serving
    finally:
        client.close()


@pytest.mark.parametrize(
    ("chunk", "what"),
    [(b"zz\r\nhello\r\n0\r\n\r\n", "chunk size"), (b"5\r\nhelloXY0\r\n\r\n", "after chunk data")],
)
def test_a_malformed_chunked_body_is_logged_as_such(
    server: Preforkd, chunk: bytes, what: str
) -> None:
    assert server.port is not None
    request = b"POST /count HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n" + chunk
    assert _status(raw_request("127.0.0.1", server.port, request)) == 400
    log = server.wait_log(r"Bad request body in POST /count: .*\(400\)")
    assert re.search(rf"Bad request body in POST /count: [^\n]*{what}", log, re.IGNORECASE), log
    assert "Client went away" not in log


def test_a_page_of_thirty_slow_subresources_is_served_at_once(server: Preforkd) -> None:
    """Issue 9: with default settings, 30 requests of 200 ms on one HTTP/2 connection run
    concurrently (the default thread cap once made it 16 at a time)."""
    assert server.port is not None
    client = H2Client(server.port)
    try:
        sids = [client.request(f"/concurrent?seconds=0.5&n={i}") for i in range(30)]
        client.wait(lambda: all(client.responses[sid].ended for sid in sids), timeout=20)
        most = max(int(bytes(client.responses[sid].body)) for sid in sids)
    finally:
        client.close()
    assert most == 30, f"at most {most} ran at once"


@pytest.mark.parametrize(
    "size_line", [b"5 ; name=value", b"5; name = value", b'5\t;\tname="v; x"', b"5;flag"]
)
def test_chunk_extensions_with_optional_whitespace_are_accepted(
    server: Preforkd, size_line: bytes
) -> None:
    """RFC 9112 §7.1.1: BWS around ";" and "="; extension values are ignored."""
    assert server.port is not None
    request = (
        b"POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n"
        b"Connection: close\r\n\r\n" + size_line + b"\r\nhello\r\n0\r\n\r\n"
    )
    data = raw_request("127.0.0.1", server.port, request)
    assert data.startswith(b"HTTP/1.1 200") and data.endswith(b"hello"), data[-200:]
