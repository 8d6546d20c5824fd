"""HTTP/1.1 behaviour of a real preforkd process, seen from real clients."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import threading
import time
from pathlib import Path

import httpx
import pytest

from tests.integration.conftest import Start
from tests.integration.harness import Preforkd, raw_request, wait_for

APP = "probe:app"


class Conn:
    """A raw client connection that reads responses one at a time."""

    def __init__(self, port: int, timeout: float = 5.0) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.buf = b""

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def _fill(self) -> bool:
        chunk = self.sock.recv(65536)
        self.buf += chunk
        return bool(chunk)

    def read_response(self, head_only: bool = False) -> tuple[int, dict[str, str], bytes]:
        while b"\r\n\r\n" not in self.buf:
            if not self._fill():
                raise ConnectionError(f"closed before a full head; got {self.buf!r}")
        head, self.buf = self.buf.split(b"\r\n\r\n", 1)
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split()[1])
        headers = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        if head_only or status < 200 or status in (204, 304):
            return status, headers, b""
        if "content-length" in headers:
            n = int(headers["content-length"])
            while len(self.buf) < n:
                if not self._fill():
                    raise ConnectionError("closed mid-body")
            body, self.buf = self.buf[:n], self.buf[n:]
            return status, headers, body
        if headers.get("transfer-encoding") == "chunked":
            return status, headers, self._read_chunked()
        while self._fill():
            pass
        body, self.buf = self.buf, b""
        return status, headers, body

    def _read_chunked(self) -> bytes:
        body = b""
        while True:
            while b"\r\n" not in self.buf:
                if not self._fill():
                    raise ConnectionError("closed mid-chunk")
            size_line, self.buf = self.buf.split(b"\r\n", 1)
            size = int(size_line.split(b";")[0], 16)
            while len(self.buf) < size + 2:
                if not self._fill():
                    raise ConnectionError("closed mid-chunk")
            body += self.buf[:size]
            self.buf = self.buf[size + 2 :]
            if size == 0:
                return body

    def is_closed(self, timeout: float = 5.0) -> bool:
        self.sock.settimeout(timeout)
        try:
            return self.sock.recv(1) == b""
        except ConnectionResetError:
            return True

    def close(self) -> None:
        self.sock.close()


def get(path: str) -> bytes:
    return f"GET {path} HTTP/1.1\r\nHost: t\r\n\r\n".encode()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Preforkd:
    """One shared server for the tests that do not change its configuration."""
    from tests.integration.harness import free_port

    tmp = tmp_path_factory.mktemp("http1")
    port = free_port()
    srv = Preforkd(
        [
            APP,
            "--bind",
            f"127.0.0.1:{port}",
            "--workers",
            "2",
            "--keep-alive",
            "30",
            "--limit-request-line",
            "1024",
            "--limit-request-fields",
            "20",
            "--limit-request-field-size",
            "512",
        ],
        tmp,
    )
    srv.port = port
    srv.start()
    srv.wait_serving()
    yield srv
    srv.stop()


# --- serving and keep-alive ------------------------------------------------------------


def test_httpx_get_and_headers(server: Preforkd) -> None:
    r = httpx.get(f"http://127.0.0.1:{server.port}/hello")
    assert r.status_code == 200 and r.text == "hello"
    assert r.headers["server"] == "preforkd"
    assert r.headers["date"].endswith("GMT")
    assert r.headers["content-length"] == "5"


def test_keep_alive_reuses_one_connection(server: Preforkd) -> None:
    conn = Conn(server.port)  # type: ignore[arg-type]
    pids = set()
    for _ in range(5):
        conn.send(get("/pid"))
        status, headers, body = conn.read_response()
        assert status == 200 and "connection" not in headers
        pids.add(body)
    assert len(pids) == 1, "one connection is served by one worker"
    conn.close()


def test_http10_closes_unless_keep_alive_asked(server: Preforkd) -> None:
    data = raw_request("127.0.0.1", server.port, b"GET /hello HTTP/1.0\r\n\r\n")  # type: ignore[arg-type]
    assert data.startswith(b"HTTP/1.1 200") and data.endswith(b"hello")
    conn = Conn(server.port)  # type: ignore[arg-type]
    conn.send(b"GET /hello HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
    _, headers, body = conn.read_response()
    assert headers.get("connection", "").lower() == "keep-alive" and body == b"hello"
    conn.send(b"GET /hello HTTP/1.0\r\n\r\n")
    assert conn.read_response()[2] == b"hello"
    assert conn.is_closed()


def test_connection_close_is_honoured_both_ways(server: Preforkd) -> None:
    conn = Conn(server.port)  # type: ignore[arg-type]
    conn.send(b"GET /hello HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
    status, headers, _ = conn.read_response()
    assert headers["connection"] == "close" and conn.is_closed()
    conn = Conn(server.port)  # type: ignore[arg-type]
    conn.send(get("/close"))
    status, headers, body = conn.read_response()
    assert status == 200 and body == b"bye"
    assert headers["connection"] == "close" and conn.is_closed()


def test_pipelined_requests_are_answered_in_order(server: Preforkd) -> None:
    conn = Conn(server.port)  # type: ignore[arg-type]
    # A slow first request must not let the fast ones behind it overtake it.
    conn.send(
        get("/slow?seconds=0.3") + get("/hello") + b"POST /echo HTTP/1.1\r\nHost: t\r\n"
        b"Content-Length: 4\r\n\r\nping" + get("/write")
    )
    assert conn.read_response()[2] == b"slow done"
    assert conn.read_response()[2] == b"hello"
    assert conn.read_response()[2] == b"ping"
    assert conn.read_response()[2] == b"written returned"
    conn.close()


def test_head_has_no_body_but_keeps_length(server: Preforkd) -> None:
    conn = Conn(server.port)  # type: ignore[arg-type]
    conn.send(b"HEAD /hello HTTP/1.1\r\nHost: t\r\n\r\n" + get("/hello"))
    status, headers, _ = conn.read_response(head_only=True)
    assert status == 200 and headers["content-length"] == "5"
    assert conn.read_response()[2] == b"hello"  # nothing stray between the two
    conn.close()


@pytest.mark.parametrize("code", [204, 304])
def test_no_body_statuses(server: Preforkd, code: int) -> None:
    conn = Conn(server.port)  # type: ignore[arg-type]
    conn.send(get(f"/status?code={code}&body=ignored") + get("/hello"))
    status, headers, _ = conn.read_response()
    assert status == code and "transfer-encoding" not in headers
    assert conn.read_response()[2] == b"hello"
    conn.close()


# --- bodies ------------------------------------------------------------------------------


def test_chunked_response_for_streams(server: Preforkd) -> None:
    conn = Conn(server.port)  # type: ignore[arg-type]
    conn.send(get("/stream?n=4&size=3"))
    status, headers, body = conn.read_response()
    assert status == 200 and headers["transfer-encoding"] == "chunked"
    assert body == b"AAABBBCCCDDD"
    conn.close()


def test_http10_stream_is_close_delimited(server: Preforkd) -> None:
    data = raw_request("127.0.0.1", server.port, b"GET /stream?n=2&size=2 HTTP/1.0\r\n\r\n")  # type: ignore[arg-type]
    head, body = data.split(b"\r\n\r\n", 1)
    assert b"chunked" not in head.lower() and body == b"AABB"


def test_chunked_request_body(server: Preforkd) -> None:
    conn = Conn(server.port)  # type: ignore[arg-type]
    conn.send(
        b"POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"5\r\nhello\r\n1;ext=1\r\n \r\n5\r\nworld\r\n0\r\nTrailer: x\r\n\r\n"
    )
    assert conn.read_response()[2] == b"hello world"
    conn.send(get("/hello"))
    assert conn.read_response()[2] == b"hello"
    conn.close()


def test_httpx_streaming_upload_is_chunked(server: Preforkd) -> None:
    def parts():  # type: ignore[no-untyped-def]
        for _ in range(10):
            yield b"x" * 1000

    r = httpx.post(f"http://127.0.0.1:{server.port}/count", content=parts())
    assert r.text == "10000"


def test_readline_iteration_over_body(server: Preforkd) -> None:
    r = httpx.post(f"http://127.0.0.1:{server.port}/lines", content=b"a\nb\nc\nd")
    assert r.text == "4"


def test_expect_100_continue_sent_only_when_app_reads(server: Preforkd) -> None:
    conn = Conn(server.port)  # type: ignore[arg-type]
    conn.send(
        b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 4\r\nExpect: 100-continue\r\n\r\n"
    )
    status, _, _ = conn.read_response()
    assert status == 100
    conn.send(b"data")
    assert conn.read_response()[:3:2] == (200, b"data")
    # An app that never reads the body answers without a 100, and the connection is
    # closed rather than left waiting for a body the client may never send.
    conn = Conn(server.port)  # type: ignore[arg-type]
    conn.send(
        b"POST /hello HTTP/1.1\r\nHost: t\r\nContent-Length: 4\r\nExpect: 100-continue\r\n\r\n"
    )
    status, _, body = conn.read_response()
    assert status == 200 and body == b"hello"
    assert conn.is_closed()


def test_unread_body_is_drained_for_keep_alive(server: Preforkd) -> None:
    conn = Conn(server.port)  # type: ignore[arg-type]
    conn.send(
        b"POST /hello HTTP/1.1\r\nHost: t\r\nContent-Length: 10\r\n\r\n0123456789" + get("/hello")
    )
    assert conn.read_response()[2] == b"hello"
    assert conn.read_response()[2] == b"hello"
    conn.close()


def test_large_uploads_then_pipelined_request_in_odd_pieces(server: Preforkd) -> None:
    # Content-Length bodies larger than a read are counted by the H1 core itself (each
    # read passed on whole, proto/h1.py _receive_length); the request after each body
    # must be found at the right byte, however the client's writes cut the stream.
    first = os.urandom(1_500_000)
    second = os.urandom(700_001)
    stream = (
        b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: %d\r\n\r\n" % len(first)
        + first
        + b"POST /count HTTP/1.1\r\nHost: t\r\nContent-Length: %d\r\n\r\n" % len(second)
        + second
        + get("/hello")
    )
    conn = Conn(server.port, timeout=30)  # type: ignore[arg-type]

    def send() -> None:  # beside the reads below: the echo is as large as the body
        start, step = 0, 1
        while start < len(stream):
            conn.send(stream[start : start + step])
            start += step
            step = step * 7 % 100_003 + 1  # 1, 8, 57, 400, ...: odd sizes up to 100 kB

    sender = threading.Thread(target=send, daemon=True)
    sender.start()
    try:
        assert conn.read_response()[::2] == (200, first)
        assert conn.read_response()[::2] == (200, str(len(second)).encode())
        assert conn.read_response()[::2] == (200, b"hello")
    finally:
        sender.join(timeout=60)
        conn.close()


def test_expect_continue_for_a_large_body_then_next_request(server: Preforkd) -> None:
    body = os.urandom(600_000)
    conn = Conn(server.port, timeout=30)  # type: ignore[arg-type]
    conn.send(
        b"POST /count HTTP/1.1\r\nHost: t\r\nExpect: 100-continue\r\n"
        b"Content-Length: %d\r\n\r\n" % len(body)
    )
    assert conn.read_response()[0] == 100
    conn.send(body[:1000])
    conn.send(body[1000:] + get("/hello"))
    assert conn.read_response()[::2] == (200, b"600000")
    assert conn.read_response()[::2] == (200, b"hello")
    conn.close()


def test_short_body_makes_the_app_see_an_error(server: Preforkd) -> None:
    conn = Conn(server.port)  # type: ignore[arg-type]
    conn.send(b"POST /count?name=short HTTP/1.1\r\nHost: t\r\nContent-Length: 100\r\n\r\nabc")
    conn.sock.shutdown(socket.SHUT_WR)
    # The app's read fails (no 200 with "3"); the server logs it and closes.
    data = b""
    while chunk := conn.sock.recv(65536):
        data += chunk
    assert b"\r\n\r\n3" not in data
    server.wait_log("Client went away during POST /count")


@pytest.mark.parametrize("loop", ["asyncio", "uvloop"])
def test_file_wrapper_sends_the_file(start_server: Start, tmp_path: Path, loop: str) -> None:
    # asyncio's loop sends with sendfile(2); uvloop has no loop.sendfile: streamed instead.
    pytest.importorskip(loop)
    server = start_server(APP, "--loop", loop)
    path = tmp_path / "blob.bin"
    payload = os.urandom(300_000)
    path.write_bytes(payload)
    r = httpx.get(f"http://127.0.0.1:{server.port}/file", params={"path": str(path)})
    assert r.headers["content-length"] == str(len(payload)) and r.content == payload
    r = httpx.get(
        f"http://127.0.0.1:{server.port}/file", params={"path": str(path), "length": "1000"}
    )
    assert r.content == payload[:1000]
    r = httpx.head(f"http://127.0.0.1:{server.port}/file", params={"path": str(path)})
    assert r.content == b""


# --- errors ------------------------------------------------------------------------------


def test_app_exception_gives_500_and_logged_traceback(server: Preforkd) -> None:
    r = httpx.get(f"http://127.0.0.1:{server.port}/error")
    assert r.status_code == 500
    log = server.wait_log("probe: deliberate failure")
    assert "Traceback" in log
    assert httpx.get(f"http://127.0.0.1:{server.port}/hello").status_code == 200


def test_error_after_head_closes_the_connection(server: Preforkd) -> None:
    conn = Conn(server.port)  # type: ignore[arg-type]
    conn.send(get("/error-after-head"))
    with pytest.raises(ConnectionError):
        conn.read_response()  # the chunked body never terminates: truncation is visible
    server.wait_log("probe: failure after the head")


@pytest.mark.parametrize(
    ("request_bytes", "status"),
    [
        (b"GARBAGE\r\n\r\n", 400),
        (b"GET / HTTP/1.1\r\n\r\n", 400),  # no Host
        (b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 400),
        (b"GET /" + b"a" * 2000 + b" HTTP/1.1\r\nHost: t\r\n\r\n", 414),
        (
            b"GET / HTTP/1.1\r\nHost: t\r\n"
            + b"".join(b"X-%d: v\r\n" % i for i in range(30))
            + b"\r\n",
            431,
        ),
        (b"GET / HTTP/1.1\r\nHost: t\r\nX-Big: " + b"v" * 1000 + b"\r\n\r\n", 431),
        (
            b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 3\r\nTransfer-Encoding: chunked"
            b"\r\n\r\n0\r\n\r\n",
            400,
        ),
        (b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd", 400),
        # RFC 9112 §6.1: a coding we do not understand → 501; §6.3: chunked not last → 400.
        (b"POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: gzip, chunked\r\n\r\n", 501),
        (b"POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: gzip\r\n\r\n", 400),
        (b"POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", 400),
        (b"GET / HTTP/1.1\r\nHost: t\r\nBad Name: v\r\n\r\n", 400),
        (b"GET / HTTP/1.1\r\nHost: t\r\nX: a\r\n folded\r\n\r\n", 400),
    ],
    ids=[
        "garbage",
        "no-host",
        "two-hosts",
        "long-line",
        "many-fields",
        "big-field",
        "cl-and-te",
        "two-cls",
        "unknown-te",
        "te-not-chunked-last",
        "bad-chunk",
        "space-in-name",
        "obs-fold",
    ],
)
def test_bad_requests_get_status_and_close(
    server: Preforkd, request_bytes: bytes, status: int
) -> None:
    data = raw_request("127.0.0.1", server.port, request_bytes)  # type: ignore[arg-type]
    assert data.startswith(b"HTTP/1.1 %d " % status), data[:200]
    assert b"connection: close" in data.lower()
    # The worker is fine and goes on serving.
    assert httpx.get(f"http://127.0.0.1:{server.port}/hello").status_code == 200


def test_many_malformed_requests_do_not_hurt_workers(server: Preforkd) -> None:
    before = set(server.workers())
    for i in range(200):
        junk = os.urandom(64) if i % 2 else b"GET /\x00 HTTP/1.1\r\n\r\n"
        raw_request("127.0.0.1", server.port, junk, timeout=2)  # type: ignore[arg-type]
    assert set(server.workers()) == before
    assert httpx.get(f"http://127.0.0.1:{server.port}/hello").status_code == 200


# --- close() and disconnects ------------------------------------------------------------


def test_close_is_called_when_client_leaves_mid_response(server: Preforkd) -> None:
    conn = Conn(server.port)  # type: ignore[arg-type]
    conn.send(get("/stream?n=100000&size=4096&name=abandoned"))
    conn.read_response(head_only=True)
    conn.sock.recv(65536)
    conn.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
    conn.close()  # RST

    def closed_seen() -> bool:
        for _ in range(4):  # each worker keeps its own record; ask until we hit the one
            r = httpx.get(f"http://127.0.0.1:{server.port}/closed", headers={"Connection": "close"})
            if "abandoned" in json.loads(r.text):
                return True
        return False

    wait_for(closed_seen, what="close() of the abandoned response")


# --- timeouts (own servers: short timeouts) ---------------------------------------------


def test_idle_keep_alive_connection_is_closed(start_server: Start) -> None:
    srv = start_server(APP, "--keep-alive", "0.5")
    conn = Conn(srv.port)  # type: ignore[arg-type]
    conn.send(get("/hello"))
    conn.read_response()
    started = time.monotonic()
    assert conn.is_closed(timeout=5)
    assert time.monotonic() - started < 3


def test_slow_request_head_is_cut_off(start_server: Start) -> None:
    srv = start_server(APP, "--header-timeout", "0.5")
    conn = Conn(srv.port)  # type: ignore[arg-type]
    conn.send(b"GET /hello HTTP/1.1\r\nHo")
    started = time.monotonic()
    conn.sock.settimeout(5)
    data = b""
    while chunk := conn.sock.recv(4096):
        data += chunk
    assert time.monotonic() - started < 3
    assert data.startswith(b"HTTP/1.1 408")
    srv.wait_log("timed out")


# --- backpressure and memory ------------------------------------------------------------


def _worker_rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def test_slow_reader_of_a_large_stream_keeps_memory_bounded(start_server: Start) -> None:
    srv = start_server(APP, "--workers", "1")
    worker = srv.workers()[0]
    baseline = _worker_rss_kib(worker)
    total = 64 * 1024 * 1024  # far beyond every buffer (transport 64 KiB, socket ~MBs)
    conn = Conn(srv.port)  # type: ignore[arg-type]
    conn.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
    conn.send(get(f"/stream?n={total // 65536}&size=65536"))
    received = 0
    peak = baseline
    deadline = time.monotonic() + 60
    while received < total and time.monotonic() < deadline:
        chunk = conn.sock.recv(65536)
        if not chunk:
            break
        received += len(chunk)
        if received % (4 * 1024 * 1024) < 65536:
            peak = max(peak, _worker_rss_kib(worker))
            time.sleep(0.001)  # a slow reader, not synchronisation
    conn.close()
    assert received >= total
    assert peak - baseline < 20 * 1024, f"worker grew by {(peak - baseline) // 1024} MiB"


def test_large_upload_to_a_slow_app_keeps_memory_bounded(start_server: Start) -> None:
    srv = start_server(APP, "--workers", "1")
    worker = srv.workers()[0]
    baseline = _worker_rss_kib(worker)
    total = 48 * 1024 * 1024
    peak = [baseline]
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            peak[0] = max(peak[0], _worker_rss_kib(worker))
            stop.wait(0.05)

    sampler = threading.Thread(target=sample)
    sampler.start()
    try:

        def body():  # type: ignore[no-untyped-def]
            block = b"u" * (1024 * 1024)
            for _ in range(total // len(block)):
                yield block

        r = httpx.post(
            f"http://127.0.0.1:{srv.port}/count?delay=0.0005",
            content=body(),
            headers={"Content-Length": str(total)},
            timeout=60,
        )
    finally:
        stop.set()
        sampler.join()
    assert r.text == str(total)
    assert peak[0] - baseline < 20 * 1024, f"worker grew by {(peak[0] - baseline) // 1024} MiB"


# --- curl --------------------------------------------------------------------------------


@pytest.mark.skipif(
    shutil.which("curl") is None, reason="curl is not installed (apt-get install curl)"
)
def test_curl_keep_alive_and_upload(server: Preforkd, tmp_path: Path) -> None:
    upload = tmp_path / "up.bin"
    upload.write_bytes(b"z" * 100_000)
    url = f"http://127.0.0.1:{server.port}"
    out = subprocess.run(
        [
            "curl",
            "-sS",
            "-v",
            f"{url}/hello",
            f"{url}/hello",
            "--next",
            "-sS",
            "--data-binary",
            f"@{upload}",
            f"{url}/count",
        ],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout == "hellohello100000"
    assert "Re-using existing connection" in out.stderr or "Reusing" in out.stderr


def test_app_on_loop_serves_bodiless_requests_inline_and_bodies_on_threads(
    start_server: Start,
) -> None:
    srv = start_server(APP, "--app-on-loop")
    conn = Conn(srv.port)  # type: ignore[arg-type]
    # A long pipeline answered on the loop thread: each in its own callback, in order.
    conn.send(b"".join(get(f"/status?code=200&body={i}&length={len(str(i))}") for i in range(300)))
    bodies = [conn.read_response()[2] for _ in range(300)]
    assert bodies == [str(i).encode() for i in range(300)]
    # A request with a body still goes to the thread pool (its reads may block).
    conn.send(b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\n\r\nhello")
    assert conn.read_response()[2] == b"hello"
    conn.send(get("/stream?n=3&size=2"))
    assert conn.read_response()[2] == b"AABBCC"
    conn.close()
    r = httpx.get(f"http://127.0.0.1:{srv.port}/error")
    assert r.status_code == 500
    transport = httpx.HTTPTransport(http2=True, http1=False)
    with httpx.Client(transport=transport) as hc:
        assert hc.get(f"http://127.0.0.1:{srv.port}/hello").text == "hello"
