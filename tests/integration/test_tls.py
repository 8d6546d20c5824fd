"""TLS listeners: certificates made with trustme, real clients, ALPN and client certs."""

from __future__ import annotations

import contextlib
import shutil
import socket
import ssl
import subprocess
from pathlib import Path
from typing import Any

import httpx
import pytest
import trustme

from tests.integration.conftest import Start
from tests.integration.harness import Preforkd, wait_for

APP = "probe:app"


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture
def certs(ca: trustme.CA, tmp_path: Path) -> dict[str, Any]:
    server_cert = ca.issue_cert("127.0.0.1", "localhost")
    cert = tmp_path / "server.pem"
    key = tmp_path / "server.key"
    ca_file = tmp_path / "ca.pem"
    server_cert.cert_chain_pems[0].write_to_path(cert)
    for pem in server_cert.cert_chain_pems[1:]:
        pem.write_to_path(cert, append=True)
    server_cert.private_key_pem.write_to_path(key)
    ca.cert_pem.write_to_path(ca_file)
    return {"cert": str(cert), "key": str(key), "ca": str(ca_file)}


def tls_server(start_server: Start, certs: dict[str, Any], *args: str) -> Preforkd:
    srv = start_server(
        APP, "--certfile", certs["cert"], "--keyfile", certs["key"], *args, wait=False
    )
    client = client_context(certs)
    wait_for(lambda: _answers(srv, client), what="the TLS server to answer")
    return srv


def _answers(srv: Preforkd, ctx: ssl.SSLContext) -> bool:
    srv.check_running()
    try:
        with httpx.Client(verify=ctx, timeout=2) as client:
            return client.get(f"https://127.0.0.1:{srv.port}/hello").status_code == 200
    except (httpx.HTTPError, OSError):
        return False


def client_context(certs: dict[str, Any], alpn: list[str] | None = None) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=certs["ca"])
    if alpn:
        ctx.set_alpn_protocols(alpn)
    return ctx


def negotiate(port: int, ctx: ssl.SSLContext) -> str | None:
    with (
        socket.create_connection(("127.0.0.1", port), timeout=5) as raw,
        ctx.wrap_socket(raw, server_hostname="127.0.0.1") as tls,
    ):
        return tls.selected_alpn_protocol()


def test_https_serves_with_url_scheme_https(start_server: Start, certs: dict[str, Any]) -> None:
    srv = tls_server(start_server, certs)
    with httpx.Client(verify=client_context(certs)) as client:
        env = client.get(f"https://127.0.0.1:{srv.port}/environ").json()
    assert env["wsgi.url_scheme"] == "https"
    assert env["HTTPS"] == "on" and env["SSL_PROTOCOL"].startswith("TLSv1.")
    assert "SSL_CLIENT_CERT" not in env


def test_alpn_http11_only_listener(start_server: Start, certs: dict[str, Any]) -> None:
    srv = tls_server(start_server, certs, "--http-protocols", "h1")
    assert negotiate(srv.port, client_context(certs, ["h2", "http/1.1"])) == "http/1.1"  # type: ignore[arg-type]


def test_tls_minimum_version_is_enforced(start_server: Start, certs: dict[str, Any]) -> None:
    srv = tls_server(start_server, certs, "--tls-min-version", "1.3")
    ctx = client_context(certs)
    ctx.maximum_version = ssl.TLSVersion.TLSv1_2
    with pytest.raises(ssl.SSLError):
        negotiate(srv.port, ctx)  # type: ignore[arg-type]


def test_client_certificates_required(
    start_server: Start, certs: dict[str, Any], ca: trustme.CA, tmp_path: Path
) -> None:
    srv = start_server(
        APP,
        "--certfile",
        certs["cert"],
        "--keyfile",
        certs["key"],
        "--ca-certs",
        certs["ca"],
        "--cert-reqs",
        "required",
        wait=False,
    )
    client_cert = ca.issue_cert("client@example.com")
    with_cert = client_context(certs)
    client_cert.configure_cert(with_cert)
    wait_for(lambda: _answers(srv, with_cert), what="the mTLS server")
    with httpx.Client(verify=with_cert) as client:
        env = client.get(f"https://127.0.0.1:{srv.port}/environ").json()
    assert env["SSL_CLIENT_VERIFY"] == "SUCCESS"
    assert "BEGIN CERTIFICATE" in env["SSL_CLIENT_CERT"]
    # Without a certificate the handshake (or the first read) fails; the server goes on.
    with (
        pytest.raises((ssl.SSLError, httpx.HTTPError, OSError)),
        httpx.Client(verify=client_context(certs)) as client,
    ):
        client.get(f"https://127.0.0.1:{srv.port}/hello")
    assert _answers(srv, with_cert)


def test_garbage_and_stalled_handshakes_do_not_hurt(
    start_server: Start, certs: dict[str, Any]
) -> None:
    srv = tls_server(start_server, certs, "--handshake-timeout", "0.5")
    stalled = socket.create_connection(("127.0.0.1", srv.port))  # type: ignore[arg-type]
    with socket.create_connection(("127.0.0.1", srv.port)) as junk:  # type: ignore[arg-type]
        junk.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")  # plain HTTP to a TLS port
        junk.settimeout(5)
        with contextlib.suppress(OSError):
            junk.recv(100)
    assert _answers(srv, client_context(certs))
    stalled.settimeout(5)
    with contextlib.suppress(ConnectionResetError):  # cut off at the handshake timeout
        assert stalled.recv(1) == b""
    stalled.close()


def test_bad_certificate_path_is_a_config_error(start_server: Start, tmp_path: Path) -> None:
    srv = start_server(APP, "--certfile", str(tmp_path / "missing.pem"), wait=False)
    assert srv.wait_exit() == 2
    assert "--certfile" in srv.log()


def test_alpn_selects_h2_and_clients_speak_http2(
    start_server: Start, certs: dict[str, Any]
) -> None:
    srv = tls_server(start_server, certs)
    assert negotiate(srv.port, client_context(certs, ["h2", "http/1.1"])) == "h2"  # type: ignore[arg-type]
    assert negotiate(srv.port, client_context(certs, ["http/1.1"])) == "http/1.1"  # type: ignore[arg-type]
    with httpx.Client(verify=client_context(certs), http2=True) as client:
        r = client.get(f"https://127.0.0.1:{srv.port}/environ")
    assert r.http_version == "HTTP/2"
    env = r.json()
    assert env["SERVER_PROTOCOL"] == "HTTP/2" and env["wsgi.url_scheme"] == "https"
    if shutil.which("curl"):
        out = subprocess.run(
            [
                "curl",
                "-sS",
                "--http2",
                "--cacert",
                certs["ca"],
                "-w",
                " %{http_version}",
                f"https://127.0.0.1:{srv.port}/hello",
            ],
            capture_output=True,
            text=True,
            timeout=20,
        )
        assert out.stdout == "hello 2", out.stderr
