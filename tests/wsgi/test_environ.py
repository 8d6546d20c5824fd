"""PEP 3333 environ built from a protocol-neutral Request."""

from __future__ import annotations

import io
from typing import Any

import pytest

from preforkd.proto.events import Request
from preforkd.wsgi.environ import ConnectionInfo, FileWrapper, ProxyTrust, build_environ

CONN = ConnectionInfo("127.0.0.1", "8000", "10.1.2.3", "50000", "http", False)
PROXIED = ConnectionInfo("127.0.0.1", "8000", "127.0.0.1", "50000", "http", True)


def environ_for(
    target: str = "/",
    headers: list[tuple[str, str]] | None = None,
    conn: ConnectionInfo = CONN,
    **kw: Any,
) -> dict[str, Any]:
    headers = [("host", "example.com")] if headers is None else headers
    request = Request("GET", target, "1.1", headers)
    return build_environ(request, conn, io.BytesIO(), ProxyTrust(["127.0.0.1"]), **kw)


def test_required_keys() -> None:
    env = environ_for("/a/b?x=1&y=%20")
    assert env["REQUEST_METHOD"] == "GET"
    assert env["SCRIPT_NAME"] == ""
    assert env["PATH_INFO"] == "/a/b"
    assert env["QUERY_STRING"] == "x=1&y=%20"
    assert env["SERVER_PROTOCOL"] == "HTTP/1.1"
    assert env["SERVER_NAME"] == "example.com" and env["SERVER_PORT"] == "80"
    assert env["REMOTE_ADDR"] == "10.1.2.3" and env["REMOTE_PORT"] == "50000"
    assert env["wsgi.version"] == (1, 0)
    assert env["wsgi.url_scheme"] == "http"
    assert env["wsgi.input_terminated"] is True
    assert env["wsgi.run_once"] is False
    assert env["wsgi.file_wrapper"] is FileWrapper
    assert env["RAW_URI"] == "/a/b?x=1&y=%20"
    for key in ("wsgi.errors", "wsgi.input", "wsgi.multithread", "wsgi.multiprocess"):
        assert key in env


def test_path_info_is_percent_decoded_as_latin1() -> None:
    # PEP 3333: the decoded bytes, each mapped to the code point of the same value.
    env = environ_for("/caf%C3%A9/a%2Fb")
    assert env["PATH_INFO"] == "/caf\xc3\xa9/a/b"
    assert env["PATH_INFO"].encode("latin-1").decode("utf-8") == "/café/a/b"


def test_script_name_is_stripped_from_path_info() -> None:
    env = environ_for("/app/page", script_name="/app")
    assert env["SCRIPT_NAME"] == "/app" and env["PATH_INFO"] == "/page"
    assert environ_for("/application", script_name="/app")["PATH_INFO"] == "/application"


def test_headers_become_http_keys_and_repeats_are_joined() -> None:
    env = environ_for(
        headers=[
            ("host", "h"),
            ("accept", "a"),
            ("accept", "b"),
            ("cookie", "x=1"),
            ("cookie", "y=2"),
            ("content-type", "text/plain"),
            ("content-length", "3"),
            ("x-custom-thing", "v"),
        ]
    )
    assert env["HTTP_ACCEPT"] == "a,b"
    assert env["HTTP_COOKIE"] == "x=1; y=2"
    assert env["CONTENT_TYPE"] == "text/plain" and "HTTP_CONTENT_TYPE" not in env
    assert env["CONTENT_LENGTH"] == "3"
    assert env["HTTP_X_CUSTOM_THING"] == "v"


def test_underscore_headers_are_dropped_so_they_cannot_spoof_dashed_ones() -> None:
    env = environ_for(headers=[("host", "h"), ("x_forwarded_for", "6.6.6.6"), ("x-real", "1")])
    assert "HTTP_X_FORWARDED_FOR" not in env
    assert env["HTTP_X_REAL"] == "1"


def test_server_name_and_port_from_host() -> None:
    assert environ_for(headers=[("host", "example.com:8080")])["SERVER_PORT"] == "8080"
    env = environ_for(headers=[("host", "[::1]:9000")])
    assert env["SERVER_NAME"] == "[::1]" and env["SERVER_PORT"] == "9000"
    env = environ_for(headers=[])
    assert env["SERVER_NAME"] == "127.0.0.1" and env["SERVER_PORT"] == "8000"


def test_absolute_form_target_overrides_host() -> None:
    # RFC 9112 §3.2.2: the authority of an absolute-form target replaces Host.
    env = environ_for("http://other.example:81/p?q=1", headers=[("host", "ignored")])
    assert env["HTTP_HOST"] == "other.example:81"
    assert env["PATH_INFO"] == "/p" and env["QUERY_STRING"] == "q=1"
    assert env["SERVER_NAME"] == "other.example" and env["SERVER_PORT"] == "81"


def test_forwarded_headers_ignored_from_untrusted_peer() -> None:
    headers = [("host", "h"), ("x-forwarded-for", "1.1.1.1"), ("x-forwarded-proto", "https")]
    env = environ_for(headers=headers)
    assert env["REMOTE_ADDR"] == "10.1.2.3" and env["wsgi.url_scheme"] == "http"


def test_forwarded_headers_honoured_from_trusted_proxy() -> None:
    headers = [
        ("host", "h"),
        ("x-forwarded-for", "6.6.6.6, 1.1.1.1, 127.0.0.1"),
        ("x-forwarded-proto", "https"),
    ]
    env = environ_for(headers=headers, conn=PROXIED)
    # Rightmost untrusted hop: entries to its left were written by the client itself.
    assert env["REMOTE_ADDR"] == "1.1.1.1"
    assert env["wsgi.url_scheme"] == "https" and env["SERVER_PORT"] == "443"


@pytest.mark.parametrize(
    ("allowed", "address", "trusted"),
    [
        (["127.0.0.1"], "127.0.0.1", True),
        (["127.0.0.1"], "10.0.0.1", False),
        (["10.0.0.0/8"], "10.9.9.9", True),
        (["::1"], "::1", True),
        (["*"], "8.8.8.8", True),
        (["127.0.0.1"], "", True),  # a UNIX socket peer
        (["127.0.0.1"], "not-an-ip", False),
    ],
)
def test_proxy_trust(allowed: list[str], address: str, trusted: bool) -> None:
    assert ProxyTrust(allowed).trusts(address) is trusted


def test_file_wrapper_iterates_and_closes(tmp_path: Any) -> None:
    path = tmp_path / "f.bin"
    path.write_bytes(b"x" * 10)
    with open(path, "rb") as fh:
        wrapper = FileWrapper(fh, block_size=4)
        assert wrapper.fileno() == fh.fileno()
        assert list(wrapper) == [b"xxxx", b"xxxx", b"xx"]
        wrapper.close()
        assert fh.closed
    assert FileWrapper(io.BytesIO(b"abc")).fileno() is None
