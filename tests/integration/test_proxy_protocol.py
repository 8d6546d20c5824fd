"""``--proxy-protocol``: the client named by a PROXY header, v1 and v2, before TLS and
HTTP/2, against real preforkd processes (and a real haproxy when it is installed)."""

from __future__ import annotations

import ipaddress
import json
import shutil
import socket
import ssl
import struct
import subprocess
from pathlib import Path
from typing import Any

import h2.connection
import h2.events
import pytest
import trustme

from tests.integration.conftest import Start
from tests.integration.harness import Preforkd, free_port, read_response, wait_for

pytestmark = pytest.mark.timeout(60)
V2_SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"
ENVIRON = b"GET /environ HTTP/1.1\r\nHost: t\r\n\r\n"


def v1(client: str = "203.0.113.7", port: int = 51234) -> bytes:
    return f"PROXY TCP4 {client} 192.0.2.1 {port} 443\r\n".encode()


def v2(client: str = "2001:db8::7", port: int = 4000, command: int = 1) -> bytes:
    source = ipaddress.ip_address(client)
    family = 0x11 if source.version == 4 else 0x21
    destination = ipaddress.ip_address("192.0.2.1" if source.version == 4 else "2001:db8::1")
    body = source.packed + destination.packed + struct.pack("!HH", port, 443) + b"\x04\x00\x01x"
    return V2_SIGNATURE + bytes([0x20 | command, family]) + struct.pack("!H", len(body)) + body


def environ_over(sock: socket.socket | ssl.SSLSocket) -> dict[str, Any]:
    sock.sendall(ENVIRON)
    head, body = read_response(sock)
    assert head.startswith(b"HTTP/1.1 200"), head
    result: dict[str, Any] = json.loads(body)
    return result


def closed_without_answer(sock: socket.socket) -> bool:
    sock.settimeout(10)
    try:
        return sock.recv(65536) == b""
    except ConnectionResetError:
        return True


@pytest.fixture
def proxied(start_server: Start) -> Preforkd:
    return start_server(
        "probe:app", "--proxy-protocol", "--access-logfile", "-", "--header-timeout", "2",
        wait=False,
    )  # fmt: skip


def connect(server: Preforkd) -> socket.socket:
    def accepted() -> socket.socket | None:
        server.check_running()
        try:
            return socket.create_connection(("127.0.0.1", server.port or 0), timeout=10)
        except OSError:
            return None

    sock: socket.socket = wait_for(accepted, what="the server to accept")  # type: ignore[assignment]
    return sock


def test_v1_names_the_client_for_every_request_on_the_connection(proxied: Preforkd) -> None:
    with connect(proxied) as sock:
        sock.sendall(v1())
        first = environ_over(sock)
        second = environ_over(sock)  # keep-alive: the same client
    for environ in (first, second):
        assert (environ["REMOTE_ADDR"], environ["REMOTE_PORT"]) == ("203.0.113.7", "51234")
    proxied.wait_log(r"203\.0\.113\.7 - - \[.*\] \"GET /environ HTTP/1\.1\" 200")


def test_v2_ipv6_header_split_into_single_bytes(proxied: Preforkd) -> None:
    with connect(proxied) as sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        for byte in v2():
            sock.sendall(bytes([byte]))  # the worst case of partial reads
        environ = environ_over(sock)
    assert (environ["REMOTE_ADDR"], environ["REMOTE_PORT"]) == ("2001:db8::7", "4000")


def test_v2_local_command_keeps_the_real_peer(proxied: Preforkd) -> None:
    with connect(proxied) as sock:
        sock.sendall(v2(command=0) + ENVIRON)
        _, body = read_response(sock)
        assert json.loads(body)["REMOTE_ADDR"] == "127.0.0.1"


def test_h2c_prior_knowledge_after_the_header(proxied: Preforkd) -> None:
    with connect(proxied) as sock:
        conn = h2.connection.H2Connection()
        conn.initiate_connection()
        sock.sendall(v1("198.51.100.9", 7) + conn.data_to_send())
        conn.send_headers(
            1, [(":method", "GET"), (":path", "/environ"), (":scheme", "http"),
                (":authority", "t")], end_stream=True,
        )  # fmt: skip
        sock.sendall(conn.data_to_send())
        body, ended = b"", False
        while not ended:
            for event in conn.receive_data(sock.recv(65536)):
                if isinstance(event, h2.events.DataReceived):
                    body += event.data
                ended = ended or isinstance(event, h2.events.StreamEnded)
            sock.sendall(conn.data_to_send())
    environ = json.loads(body)
    assert environ["SERVER_PROTOCOL"] == "HTTP/2"
    assert (environ["REMOTE_ADDR"], environ["REMOTE_PORT"]) == ("198.51.100.9", "7")


def test_header_precedes_the_tls_handshake(start_server: Start, tmp_path: Path) -> None:
    ca = trustme.CA()
    issued = ca.issue_cert("127.0.0.1")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    issued.private_key_pem.write_to_path(key)
    for i, pem in enumerate(issued.cert_chain_pems):
        pem.write_to_path(cert, append=i > 0)
    server = start_server(
        "probe:app", "--proxy-protocol", "--certfile", str(cert), "--keyfile", str(key),
        wait=False,
    )  # fmt: skip
    client = ssl.create_default_context()
    ca.configure_trust(client)
    raw = connect(server)
    raw.sendall(v2("192.0.2.44", 1234))
    with client.wrap_socket(raw, server_hostname="127.0.0.1") as tls:
        environ = environ_over(tls)
    assert environ["wsgi.url_scheme"] == "https"
    assert (environ["REMOTE_ADDR"], environ["REMOTE_PORT"]) == ("192.0.2.44", "1234")


@pytest.mark.parametrize(
    ("sent", "logged"),
    [
        (ENVIRON, "no PROXY protocol header"),
        (b"PROXY TCP4 203.0.113.7 192.0.2.1 99999 443\r\n" + ENVIRON, "is not a number"),
        (V2_SIGNATURE + b"\x2f\x11\x00\x00", "unknown command"),
    ],
)
def test_a_connection_without_a_valid_header_is_closed(
    proxied: Preforkd, sent: bytes, logged: str
) -> None:
    with connect(proxied) as sock:
        sock.sendall(sent)
        assert closed_without_answer(sock)
    proxied.wait_log(f"PROXY protocol: bad header from 127.0.0.1: .*{logged}")
    with connect(proxied) as sock:  # and the worker goes on serving
        sock.sendall(v1())
        assert environ_over(sock)["REMOTE_ADDR"] == "203.0.113.7"


def test_a_silent_connection_is_closed_at_the_header_timeout(proxied: Preforkd) -> None:
    with connect(proxied) as sock:
        sock.sendall(b"PROXY TCP4 ")  # and nothing more
        assert closed_without_answer(sock)
    proxied.wait_log(r"PROXY protocol: no header from 127\.0\.0\.1 within 2s; closing")


def test_only_trusted_peers_may_send_it(start_server: Start) -> None:
    server = start_server(
        "probe:app", "--proxy-protocol", "--forwarded-allow-ips", "192.0.2.0/24", wait=False
    )
    with connect(server) as sock:
        sock.sendall(v1() + ENVIRON)
        assert closed_without_answer(sock)
    server.wait_log(r"PROXY protocol: connection from 127\.0\.0\.1, which is not in "
                    r"--forwarded-allow-ips; closing")  # fmt: skip


@pytest.mark.skipif(not shutil.which("haproxy"), reason="haproxy not installed")
@pytest.mark.parametrize("send_proxy", ["send-proxy", "send-proxy-v2"])
def test_behind_a_real_haproxy(start_server: Start, tmp_path: Path, send_proxy: str) -> None:
    server = start_server("probe:app", "--proxy-protocol", wait=False)
    front = free_port()
    config = tmp_path / "haproxy.cfg"
    config.write_text(
        "global\n  maxconn 100\ndefaults\n  mode tcp\n  timeout connect 5s\n"
        "  timeout client 30s\n  timeout server 30s\n"
        f"frontend front\n  bind 127.0.0.1:{front}\n  default_backend back\n"
        f"backend back\n  server preforkd 127.0.0.1:{server.port} {send_proxy}\n"
    )
    haproxy = subprocess.Popen(
        ["haproxy", "-db", "-f", str(config)], stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:

        def through_haproxy() -> dict[str, Any] | None:
            try:
                with socket.create_connection(("127.0.0.1", front), timeout=10) as sock:
                    port = sock.getsockname()[1]
                    environ = environ_over(sock)
                    return environ if environ["REMOTE_PORT"] == str(port) else None
            except (OSError, AssertionError):
                return None

        environ = wait_for(through_haproxy, what="a request through haproxy")
        assert environ["REMOTE_ADDR"] == "127.0.0.1"  # type: ignore[index]
    finally:
        haproxy.terminate()
        haproxy.wait(10)
