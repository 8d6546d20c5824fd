"""HTTP/1.1 uploads through a real worker: every body comes back byte for byte, whichever
way it was framed (Content-Length, chunked), read (by 64 KiB, by line, at once, late) or
carried (plain TCP, TLS), on both loops, with a request pipelined right after a body.

Bodies of 64 KiB and more are read into the worker's body buffers (worker/h1body.py),
which are written again once no piece of them is unread: a buffer reused too early shows
here as a wrong byte in an echoed body."""

from __future__ import annotations

import os
import socket
import ssl
from collections.abc import Iterator
from pathlib import Path

import pytest
import trustme

from tests.integration.conftest import Start
from tests.integration.harness import Preforkd

APP = "body_echo:app"


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    ca = trustme.CA()
    where = tmp_path_factory.mktemp("certs")
    server_cert = ca.issue_cert("127.0.0.1")
    cert, key, ca_file = where / "server.pem", where / "server.key", where / "ca.pem"
    for i, pem in enumerate(server_cert.cert_chain_pems):
        pem.write_to_path(cert, append=i > 0)
    server_cert.private_key_pem.write_to_path(key)
    ca.cert_pem.write_to_path(ca_file)
    return {"cert": str(cert), "key": str(key), "ca": str(ca_file)}


class Client:
    """One kept-alive connection; responses are read in order off one buffer, so that
    pipelined responses are not lost between reads."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buffered = b""

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def response(self) -> tuple[bytes, bytes]:
        while b"\r\n\r\n" not in self.buffered:
            self._recv()
        head, _, rest = self.buffered.partition(b"\r\n\r\n")
        length = int(head.lower().split(b"content-length:")[1].split(b"\r\n")[0])
        self.buffered = rest
        while len(self.buffered) < length:
            self._recv()
        body, self.buffered = self.buffered[:length], self.buffered[length:]
        return head, body

    def _recv(self) -> None:
        chunk = self.sock.recv(1 << 20)
        assert chunk, f"connection closed; buffered {self.buffered[:200]!r}"
        self.buffered += chunk


def connect(server: Preforkd, certs: dict[str, str] | None) -> Client:
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=60)
    if certs is not None:
        ctx = ssl.create_default_context(cafile=certs["ca"])
        sock = ctx.wrap_socket(sock, server_hostname="127.0.0.1")
    return Client(sock)


def post(body: bytes, query: str = "") -> bytes:
    head = b"POST /%s HTTP/1.1\r\nHost: t\r\nContent-Length: %d\r\n\r\n"
    return head % (query.encode(), len(body)) + body


def post_chunked(body: bytes, piece: int, query: str = "") -> bytes:
    out = [b"POST /%s HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n" % query.encode()]
    for i in range(0, len(body), piece):
        part = body[i : i + piece]
        out.append(b"%x\r\n" % len(part) + part + b"\r\n")
    out.append(b"0\r\n\r\n")
    return b"".join(out)


def lines(size: int) -> bytes:
    """Random bytes with a newline every ~100 bytes (for readline)."""
    raw = bytearray(os.urandom(size))
    for i in range(0, size, 97):
        raw[i] = 0x0A
    return bytes(raw)


@pytest.fixture(params=["asyncio", "uvloop"])
def loop(request: pytest.FixtureRequest) -> Iterator[str]:
    pytest.importorskip(request.param)
    yield request.param


@pytest.mark.parametrize("tls", [False, True], ids=["tcp", "tls"])
def test_uploads_echo_exactly(
    start_server: Start, certs: dict[str, str], loop: str, tls: bool, tmp_path: Path
) -> None:
    args = ["--loop", loop, "--workers", "1"]
    if tls:
        args += ["--certfile", certs["cert"], "--keyfile", certs["key"]]
    server = start_server(APP, *args, wait=False)
    server.wait_log("is ready")
    client = connect(server, certs if tls else None)
    cases: list[tuple[bytes, bytes]] = []
    for size, query in [
        (1, ""),
        (65_535, ""),
        (65_537, "?read=all"),
        (300_001, "?read=1000"),
        (1_048_576, ""),
        (3_000_017, "?read=65536"),
        (2_000_000, "?sleep=0.3"),  # piles up to the body buffer: reading pauses
        (700_000, "?read=line"),
    ]:
        body = lines(size) if "line" in query else os.urandom(size)
        cases.append((post(body, query), body))
    for size, piece in [(100_000, 7_000), (1_500_000, 65_536)]:
        body = os.urandom(size)
        cases.append((post_chunked(body, piece), body))
    for request, body in cases:
        client.send(request)
        try:
            head, echoed = client.response()
        except AssertionError as exc:
            raise AssertionError(f"{exc}\nserver log:\n{server.log()}") from None
        assert head.startswith(b"HTTP/1.1 200"), head
        assert echoed == body, f"{len(body)} bytes sent, {len(echoed)} echoed, differ"
    # Pipelined: requests right after a long body, in one send. (The server reads the
    # requests after the first only once it has answered it: what follows the first body
    # must fit the sockets' buffers, as the client reads no answer before it has sent
    # all; an SSL socket cannot send in one thread while it receives in another.)
    first, second, third = os.urandom(900_000), b"after", os.urandom(70_000)
    client.send(post(first) + post(second) + post(third, "?read=all"))
    for body in (first, second, third):
        try:
            head, echoed = client.response()
        except AssertionError as exc:
            raise AssertionError(f"{exc}\nserver log:\n{server.log()}") from None
        assert head.startswith(b"HTTP/1.1 200") and echoed == body
    client.sock.close()
    server.check_running()
    assert "Traceback" not in server.log()


@pytest.mark.parametrize("early_bytes", [0, 20_000])
def test_h2c_upgrade_after_an_upload(start_server: Start, loop: str, early_bytes: int) -> None:
    """After an upload the next head is read into a body buffer; an Upgrade: h2c there
    must still hand HTTP/2 every byte after it, even a client's preface and frames sent
    before the 101 (``early_bytes`` of frames of an unknown type, which HTTP/2 ignores,
    RFC 9113 §5.5: more than a head is split from its read)."""
    import h2.config
    import h2.connection
    import h2.events

    server = start_server(APP, "--loop", loop, "--workers", "1", wait=False)
    server.wait_log("is ready")
    client = connect(server, None)
    body = os.urandom(300_000)
    client.send(post(body))
    assert client.response()[1] == body
    h2conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
    settings = h2conn.initiate_upgrade_connection().decode()
    h2conn.data_to_send()  # (the preface goes after the head, below)
    head = (
        "GET /?read=all HTTP/1.1\r\nHost: t\r\nConnection: Upgrade, HTTP2-Settings\r\n"
        f"Upgrade: h2c\r\nHTTP2-Settings: {settings}\r\n\r\n"
    ).encode()
    h2conn.initiate_connection()
    early = h2conn.data_to_send()
    while len(early) < early_bytes:  # type 0x20, no flags, stream 0, 10,000 bytes
        early += (10_000).to_bytes(3, "big") + b"\x20\x00" + bytes(4) + bytes(10_000)
    h2conn.ping(b"last one")  # answered only if every byte before it reached HTTP/2
    pings = 1
    client.send(head + early + h2conn.data_to_send())
    while b"\r\n\r\n" not in client.buffered:
        client._recv()
    status, _, rest = client.buffered.partition(b"\r\n\r\n")
    assert status.startswith(b"HTTP/1.1 101"), status
    acks, ended = 0, False
    events = h2conn.receive_data(rest)
    while True:
        for event in events:
            acks += isinstance(event, h2.events.PingAckReceived)
            ended |= isinstance(event, h2.events.StreamEnded) and event.stream_id == 1
        if ended and acks == pings:
            break
        chunk = client.sock.recv(1 << 16)
        assert chunk, f"closed with {acks} of {pings} PING ACKs, stream 1 ended: {ended}"
        events = h2conn.receive_data(chunk)
        client.send(h2conn.data_to_send())
    client.sock.close()
