"""HTTP/2 of a real preforkd process: prior knowledge, Upgrade, TLS/ALPN, streams, abuse."""

from __future__ import annotations

import contextlib
import json
import shutil
import signal
import socket
import subprocess
import time
from typing import Any

import h2.errors
import httpx
import pytest
from hyperframe.frame import ContinuationFrame, HeadersFrame, PingFrame, SettingsFrame

from preforkd.proto.negotiate import GOAWAY_PROTOCOL_ERROR
from tests.integration.conftest import Start
from tests.integration.h2client import H2Client
from tests.integration.harness import Preforkd, free_port, raw_request, wait_for

APP = "probe:app"
ENHANCE_YOUR_CALM = h2.errors.ErrorCodes.ENHANCE_YOUR_CALM
PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Any:
    port = free_port()
    srv = Preforkd(
        [APP, "--bind", f"127.0.0.1:{port}", "--workers", "1", "--threads", "32"],
        tmp_path_factory.mktemp("h2"),
    )
    srv.port = port
    srv.start()
    srv.wait_serving()
    yield srv
    srv.stop()


def client(srv: Preforkd, **kw: Any) -> H2Client:
    return H2Client(srv.port, **kw)  # type: ignore[arg-type]


# --- prior knowledge -------------------------------------------------------------------


def test_prior_knowledge_get(server: Preforkd) -> None:
    c = client(server)
    r = c.get("/hello")
    assert r.status == 200 and bytes(r.body) == b"hello"
    assert r.headers["server"] == "preforkd" and "date" in r.headers
    assert all(name == name.lower() for name in r.headers)
    c.close()


def test_environ_over_http2(server: Preforkd) -> None:
    c = client(server)
    sid = c.request("/environ", headers=[("cookie", "a=1"), ("cookie", "b=2"), ("x-thing", "v")])
    c.wait(lambda: c.responses[sid].ended)
    env = json.loads(bytes(c.responses[sid].body))
    assert env["SERVER_PROTOCOL"] == "HTTP/2"
    assert env["HTTP_HOST"] == "127.0.0.1"
    assert env["HTTP_COOKIE"] == "a=1; b=2"
    assert env["HTTP_X_THING"] == "v"
    c.close()


def test_connection_specific_response_headers_are_dropped(server: Preforkd) -> None:
    c = client(server)
    r = c.get("/close")  # the app sets "Connection: close"
    assert r.status == 200 and "connection" not in r.headers
    c.close()


def test_post_body_and_chunked_like_streaming_response(server: Preforkd) -> None:
    c = client(server)
    sid = c.request("/echo", method="POST", body=b"x" * 100_000)
    c.wait(lambda: c.responses[sid].ended)
    assert len(c.responses[sid].body) == 100_000
    r = c.get("/stream?n=5&size=1000")
    assert len(r.body) == 5000
    c.close()


def test_app_error_gives_500_and_error_after_head_resets(server: Preforkd) -> None:
    c = client(server)
    assert c.get("/error").status == 500
    r = c.get("/error-after-head")
    assert r.reset is not None and not r.ended
    assert c.get("/hello").status == 200  # the connection goes on
    c.close()


def test_streams_run_in_parallel(server: Preforkd) -> None:
    c = client(server)
    started = time.monotonic()
    sids = [c.request("/slow?seconds=0.5") for _ in range(10)]
    c.wait(lambda: all(c.responses[s].ended for s in sids), timeout=10)
    elapsed = time.monotonic() - started
    assert elapsed < 2.5, f"10 x 0.5 s took {elapsed:.1f} s: streams are not parallel"
    c.close()


def test_large_upload_with_small_windows(start_server: Start) -> None:
    srv = start_server(APP, "--http2-initial-window-size", "65535")
    c = client(srv)
    sid = c.request("/count?delay=0.001", method="POST", body=b"u" * (8 * 1024 * 1024))
    c.wait(lambda: c.responses[sid].ended, timeout=60)
    assert bytes(c.responses[sid].body) == str(8 * 1024 * 1024).encode()
    c.close()


def test_large_download_with_a_small_client_window(server: Preforkd) -> None:
    c = client(server, window=1024)
    r = c.get("/stream?n=200&size=16384", timeout=60)
    assert len(r.body) == 200 * 16384
    c.close()


def test_small_response_is_not_starved_by_a_large_one(server: Preforkd) -> None:
    c = client(server)
    big = c.request("/stream?n=2000&size=16384")
    c.wait(lambda: len(c.responses[big].body) > 0)
    # RFC 9218 §10: responses of one urgency that are not incremental go one at a time, so
    # the small one says it is incremental; then it takes turns with the download.
    small = c.request("/hello", headers=[("priority", "i")])
    c.wait(lambda: c.responses[small].ended, timeout=30)
    assert not c.responses[big].ended, "the small response waited for the whole download"
    c.conn.reset_stream(big)
    c.flush()
    c.close()


def test_reset_stream_closes_the_app_iterable(server: Preforkd) -> None:
    c = client(server)
    sid = c.request("/stream?n=100000&size=16384&name=h2reset")
    c.wait(lambda: len(c.responses[sid].body) > 0)
    c.conn.reset_stream(sid)
    c.flush()

    def closed_seen() -> bool:
        r = c.get("/closed")
        return "h2reset" in json.loads(bytes(r.body))

    wait_for(closed_seen, what="close() after RST_STREAM")
    c.close()


def test_too_many_concurrent_streams_are_refused(start_server: Start) -> None:
    srv = start_server(APP, "--http2-max-concurrent-streams", "2")
    c = client(srv)
    c.receive_once()  # the server's SETTINGS
    sids = [c.request("/slow?seconds=0.5") for _ in range(2)]
    # h2 on our side would refuse to open a third; go below it with a raw HEADERS frame.
    c.conn.local_settings.acknowledge()
    extra = sids[-1] + 2
    block = c.conn.encoder.encode(
        [(":method", "GET"), (":path", "/hello"), (":scheme", "http"), (":authority", "x")]
    )
    frame = HeadersFrame(extra, block, flags=["END_HEADERS", "END_STREAM"])
    c.sock.sendall(frame.serialize())
    # RST_STREAM (length 4, type 3, no flags) on that stream with REFUSED_STREAM (7).
    want = b"\x00\x00\x04\x03\x00" + extra.to_bytes(4, "big") + (7).to_bytes(4, "big")
    deadline = time.monotonic() + 5
    data = b""
    while time.monotonic() < deadline and want not in data:
        data += c.sock.recv(65536)
    assert want in data
    c.sock.close()


def test_rapid_reset_gets_enhance_your_calm(server: Preforkd) -> None:
    c = client(server)
    # CVE-2023-44487: open and reset streams as fast as possible, in one burst of bytes.
    for _ in range(250):  # past the budget of 200 per 30 s
        sid = c.conn.get_next_available_stream_id()
        c.conn.send_headers(
            sid, [(":method", "GET"), (":path", "/hello"), (":scheme", "http"), (":authority", "x")]
        )
        c.conn.reset_stream(sid)
    with contextlib.suppress(OSError):  # the server may hang up before it has read it all
        c.flush()
    with contextlib.suppress(ConnectionError, OSError):
        c.wait(lambda: c.goaway is not None, timeout=10)
    assert c.goaway is not None and c.goaway.error_code == ENHANCE_YOUR_CALM
    assert client(server).get("/hello").status == 200


FLOODS = {
    # CVE-2019-9512 and CVE-2019-9515: thousands of frames that each cost the server work.
    "ping": lambda i: PingFrame(0, opaque_data=b"%08d" % i).serialize(),
    "settings": lambda i: SettingsFrame(0, settings={4: 65535}).serialize(),
}


@pytest.mark.parametrize("kind", sorted(FLOODS))
def test_control_frame_floods_get_enhance_your_calm(server: Preforkd, kind: str) -> None:
    c = client(server)
    # Past the budget (100 per 30 s) but small enough that the server has read it all when
    # it closes: unread input would make the close a RST, which can discard the GOAWAY.
    payload = b"".join(FLOODS[kind](i) for i in range(150))
    with contextlib.suppress(ConnectionError, OSError):  # it may hang up mid-flood
        c.sock.sendall(payload)
        c.wait(lambda: c.goaway is not None, timeout=10)
    assert c.goaway is not None and c.goaway.error_code == ENHANCE_YOUR_CALM
    assert client(server).get("/hello").status == 200


def test_continuation_flood_is_cut_off(server: Preforkd) -> None:
    c = client(server)
    block = c.conn.encoder.encode(
        [(":method", "GET"), (":path", "/"), (":scheme", "http"), (":authority", "x")]
    )
    c.sock.sendall(HeadersFrame(1, block[:3]).serialize())
    sent = 0
    try:
        for _ in range(20000):  # an endless header block, 320 MB if nothing stopped it
            c.sock.sendall(ContinuationFrame(1, b"\x00" * 16384).serialize())
            sent += 1
    except OSError:
        pass
    assert sent < 20000, "the server kept reading an unbounded header block"
    assert server.workers(), "the worker survived"
    assert client(server).get("/hello").status == 200


def test_hpack_bomb_is_refused(server: Preforkd) -> None:
    c = client(server)
    huge = [("x-bomb", "v" * 4000)] * 40  # 160 KB decoded, beyond the header-list limit
    sid = c.request("/hello", headers=huge)
    with contextlib.suppress(ConnectionError):
        c.wait(
            lambda: (
                c.responses[sid].reset is not None
                or c.goaway is not None
                or c.responses[sid].status == 431
            ),
            timeout=10,
        )
    # Decoded size beyond twice the limit: not decoded at all, the connection goes.
    assert c.goaway is not None and c.goaway.error_code == ENHANCE_YOUR_CALM
    assert c.goaway.last_stream_id == 0
    assert client(server).get("/hello").status == 200


def test_client_that_never_opens_its_window_is_timed_out(start_server: Start) -> None:
    srv = start_server(APP, "--send-timeout", "1")
    c = client(srv, window=1)
    c.auto_ack = False
    sid = c.request("/stream?n=100&size=16384&name=stalled")
    c.wait(lambda: c.responses[sid].reset is not None, timeout=10)
    assert c.responses[sid].reset == h2.errors.ErrorCodes.CANCEL
    srv.wait_log(r"Stream 1 of .* stalled \(window closed\)")


def test_preface_look_alike_is_a_protocol_error(server: Preforkd) -> None:
    data = raw_request("127.0.0.1", server.port, b"PRI * HTTP/2.0\r\n\r\nXX\r\n\r\n")  # type: ignore[arg-type]
    assert data == GOAWAY_PROTOCOL_ERROR, data[:100]


# --- graceful shutdown -------------------------------------------------------------------


def test_goaway_lets_streams_in_flight_finish(start_server: Start) -> None:
    srv = start_server(APP, "--graceful-timeout", "10")
    c = client(srv)
    sid = c.request("/slow?seconds=1")
    time.sleep(0.2)  # let the request reach the app before the stop begins (not a sync)
    srv.signal(signal.SIGTERM)
    c.wait(lambda: c.responses[sid].ended, timeout=10)
    assert bytes(c.responses[sid].body) == b"slow done"
    c.wait(lambda: c.goaway is not None or c.closed, timeout=10)
    assert srv.wait_exit() == 0


# --- h2c upgrade -------------------------------------------------------------------------


def _upgrade_request(port: int, body: bytes = b"", path: str = "/echo") -> bytes:
    method = "POST" if body else "GET"
    head = (
        f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: Upgrade, HTTP2-Settings"
        f"\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode()
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(head + body)
        data = b""
        while b"\r\n\r\n" not in data:
            data += sock.recv(65536)
        status_line = data.split(b"\r\n", 1)[0]
        if not status_line.startswith(b"HTTP/1.1 101"):
            return data
        sock.sendall(PREFACE + SettingsFrame(0).serialize())
        deadline = time.monotonic() + 5
        while b"slow done" not in data and time.monotonic() < deadline:
            try:
                chunk = sock.recv(65536)
            except TimeoutError:
                break
            if not chunk:
                break
            data += chunk
            if body and body in data:
                break
            if not body and b"hello" in data:
                break
        return data


def test_upgrade_without_body(server: Preforkd) -> None:
    data = _upgrade_request(server.port, path="/hello")  # type: ignore[arg-type]
    assert data.startswith(b"HTTP/1.1 101 Switching Protocols")
    assert b"hello" in data.split(b"\r\n\r\n", 1)[1]


def test_upgrade_with_body_answers_stream_1_over_http2(server: Preforkd) -> None:
    body = b"upgrade-body-" * 100
    data = _upgrade_request(server.port, body=body)  # type: ignore[arg-type]
    assert data.startswith(b"HTTP/1.1 101")
    assert body in data


def test_upgrade_with_a_large_body_is_served_over_http11(server: Preforkd) -> None:
    body = b"b" * (2 * 1024 * 1024)
    data = _upgrade_request(server.port, body=body)  # type: ignore[arg-type]
    assert data.startswith(b"HTTP/1.1 200")


# --- real clients ------------------------------------------------------------------------


def test_httpx_http2_prior_knowledge(server: Preforkd) -> None:
    transport = httpx.HTTPTransport(http2=True, http1=False)
    with httpx.Client(transport=transport) as hc:
        r = hc.get(f"http://127.0.0.1:{server.port}/hello")
    assert r.http_version == "HTTP/2" and r.text == "hello"


needs_curl = pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed")
needs_nghttp = pytest.mark.skipif(
    shutil.which("nghttp") is None,
    reason="nghttp is not installed (apt-get install nghttp2-client)",
)


@needs_curl
def test_curl_prior_knowledge_and_upgrade(server: Preforkd) -> None:
    url = f"http://127.0.0.1:{server.port}"
    out = subprocess.run(
        ["curl", "-sS", "--http2-prior-knowledge", "-w", " %{http_version}", f"{url}/hello"],
        capture_output=True,
        text=True,
        timeout=20,
    )
    assert out.stdout == "hello 2", out.stderr
    out = subprocess.run(
        [
            "curl",
            "-sS",
            "--http2",
            "-w",
            " %{http_version}",
            "--data-binary",
            "ping",
            f"{url}/echo",
        ],
        capture_output=True,
        text=True,
        timeout=20,
    )
    assert out.stdout == "ping 2", out.stderr


@needs_nghttp
def test_nghttp_prior_knowledge_and_upgrade(server: Preforkd) -> None:
    url = f"http://127.0.0.1:{server.port}/hello"
    out = subprocess.run(
        ["nghttp", "-n", "-s", url, url, url], capture_output=True, text=True, timeout=20
    )
    assert out.returncode == 0, out.stdout + out.stderr
    out = subprocess.run(["nghttp", "-u", url], capture_output=True, text=True, timeout=20)
    assert out.returncode == 0 and out.stdout == "hello", out.stdout + out.stderr


# --- listeners limited to one protocol ----------------------------------------------------


def test_h1_only_and_h2_only_listeners_side_by_side(start_server: Start) -> None:
    h1_port, h2_port = free_port(), free_port()
    srv = start_server(
        APP,
        "--bind",
        f"127.0.0.1:{h1_port}",
        "--bind",
        f"127.0.0.1:{h2_port}",
        "--bind-protocols",
        f"127.0.0.1:{h1_port}=h1",
        "--bind-protocols",
        f"127.0.0.1:{h2_port}=h2",
        bind=False,
        wait=False,
    )
    srv.port = h1_port
    srv.wait_serving()
    assert H2Client(h2_port).get("/hello").status == 200
    plain = raw_request("127.0.0.1", h2_port, b"GET /hello HTTP/1.1\r\nHost: x\r\n\r\n")
    assert plain.startswith(b"HTTP/1.1 505 "), plain[:200]
    # Bytes that are neither the preface nor an HTTP/1.x request line: a connection error
    # PROTOCOL_ERROR (RFC 9113 §3.4), i.e. GOAWAY with code 1, not an HTTP/1.1 505.
    broken = raw_request("127.0.0.1", h2_port, b"INVALID CONNECTION PREFACE\r\n\r\n")
    assert broken[3] == 0x07 and broken[-4:] == b"\x00\x00\x00\x01", broken[:40]
    data = raw_request("127.0.0.1", h1_port, PREFACE + SettingsFrame(0).serialize())
    assert data.startswith(b"HTTP/1.1 505 ") and b"connection: close" in data.lower()
