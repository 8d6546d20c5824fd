"""The example applications in examples/, served by a real preforkd, with curl and httpx."""

from __future__ import annotations

import hashlib
import importlib.util
import random
import shutil
import socket
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from tests.integration.harness import ROOT, Preforkd, raw_request

Start = Callable[..., Preforkd]

CURL = shutil.which("curl")
needs_curl = pytest.mark.skipif(CURL is None, reason="curl is not installed")
HELLO_PY = ROOT / "examples" / "hello.py"
UPLOAD_SIZE = 5 * 1024 * 1024
HAS_UVLOOP = importlib.util.find_spec("uvloop") is not None


def curl(*args: str) -> subprocess.CompletedProcess[bytes]:
    """curl, silent but showing errors, never through a proxy, with a time limit."""
    assert CURL is not None
    return subprocess.run(
        [CURL, "-sS", "--noproxy", "*", "--max-time", "20", *args],
        capture_output=True,
        timeout=30,
        check=False,
    )


def client(server: Preforkd) -> httpx.Client:
    return httpx.Client(base_url=f"http://127.0.0.1:{server.port}", trust_env=False, timeout=20)


def upload_body() -> bytes:
    return random.Random(20261121).randbytes(UPLOAD_SIZE)


def parse_chunked(body: bytes) -> list[bytes]:
    """The data of each chunk of a chunked body (which must be complete)."""
    chunks: list[bytes] = []
    while True:
        size_line, sep, body = body.partition(b"\r\n")
        assert sep, "truncated chunked body"
        size = int(size_line.split(b";")[0], 16)
        if size == 0:
            assert body.startswith(b"\r\n") or b"\r\n\r\n" in body, "bad trailer"
            return chunks
        chunks.append(body[:size])
        assert body[size : size + 2] == b"\r\n"
        body = body[size + 2 :]


def get_raw(server: Preforkd, target: str) -> tuple[str, bytes]:
    """(lower-cased head, body) of a GET on a connection the server closes."""
    assert server.port is not None
    request = f"GET {target} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n".encode()
    data = raw_request("127.0.0.1", server.port, request, timeout=10)
    head, sep, body = data.partition(b"\r\n\r\n")
    assert sep, data
    return head.decode("latin-1").lower(), body


# --- hello ---------------------------------------------------------------------------------


@needs_curl
def test_hello_with_curl(start_server: Start) -> None:
    server = start_server("examples.hello:app")
    result = curl("-i", f"http://127.0.0.1:{server.port}/")
    assert result.returncode == 0, result.stderr
    head, _, body = result.stdout.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200")
    assert b"content-length: 14" in head.lower()
    assert body == b"Hello, world!\n"


def test_hello_with_httpx(start_server: Start) -> None:
    server = start_server("examples.hello:app", "-w", "2")
    with client(server) as http:
        for _ in range(5):  # on one keep-alive connection
            response = http.get("/anything")
            assert response.status_code == 200
            assert response.text == "Hello, world!\n"
            assert response.headers["content-type"] == "text/plain"
            assert response.http_version == "HTTP/1.1"
        head = http.head("/")
        assert head.status_code == 200
        assert head.content == b""


# --- werkzeug --------------------------------------------------------------------------------


@pytest.fixture
def werkzeug_server(start_server: Start) -> Preforkd:
    return start_server("examples.werkzeug_app:app", "-w", "2")


def test_werkzeug_routes(werkzeug_server: Preforkd) -> None:
    with client(werkzeug_server) as http:
        assert http.get("/hello/you").text == "Hello, you!\n"
        assert http.get("/hello/caf%C3%A9").text == "Hello, café!\n"
        assert http.get("/").text.startswith("preforkd werkzeug example")
        assert http.get("/nope").status_code == 404
        assert http.get("/upload").status_code == 405


def test_werkzeug_stream_is_chunked(werkzeug_server: Preforkd) -> None:
    head, body = get_raw(werkzeug_server, "/stream?count=4&delay=0.05")
    assert head.startswith("http/1.1 200")
    assert "transfer-encoding: chunked" in head
    assert "content-length" not in head
    chunks = parse_chunked(body)
    assert len(chunks) >= 2, chunks  # sent as it was produced, not in one piece
    assert b"".join(chunks) == b"".join(f"chunk {i}\n".encode() for i in range(4))


def test_werkzeug_stream_with_httpx(werkzeug_server: Preforkd) -> None:
    with client(werkzeug_server) as http, http.stream("GET", "/stream?delay=0.01") as response:
        assert response.status_code == 200
        lines = list(response.iter_lines())
    assert lines == [f"chunk {i}" for i in range(5)]


# wsgi.file_wrapper: sendfile(2) on asyncio's own loop, streamed on uvloop (which has no
# loop.sendfile); "auto" is uvloop when it is installed.
LOOPS = ["auto", "asyncio", *(["uvloop"] if HAS_UVLOOP else [])]


def get_twice(server: Preforkd, target: str) -> list[tuple[str, bytes]]:
    """Two GETs one after the other on one keep-alive connection: (head, body) each."""
    assert server.port is not None
    responses: list[tuple[str, bytes]] = []
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        stream = sock.makefile("rb")
        for _ in range(2):
            sock.sendall(f"GET {target} HTTP/1.1\r\nHost: t\r\n\r\n".encode())
            head = b""
            while not head.endswith(b"\r\n\r\n"):
                line = stream.readline()
                assert line, f"connection closed after {len(responses)} response(s)"
                head += line
            text = head.decode("latin-1").lower()
            length = int(text.split("content-length:")[1].split("\r\n")[0])
            body = stream.read(length)
            assert len(body) == length, f"short body: {len(body)} of {length} bytes"
            responses.append((text, body))
    return responses


@pytest.mark.parametrize("loop", LOOPS)
def test_werkzeug_download(start_server: Start, loop: str) -> None:
    server = start_server("examples.werkzeug_app:app", "--loop", loop)
    expected = HELLO_PY.read_bytes()
    for head, body in get_twice(server, "/download"):  # keep-alive after a file response
        assert head.startswith("http/1.1 200")
        assert body == expected
        assert f"content-length: {len(expected)}\r\n" in head
        assert "filename=hello.py" in head
    with client(server) as http:
        response = http.get("/download")
        assert response.status_code == 200
        assert response.content == expected
        assert "Traceback" not in server.log()


@needs_curl
def test_werkzeug_download_with_curl(werkzeug_server: Preforkd, tmp_path: Path) -> None:
    out = tmp_path / "downloaded.py"
    result = curl("-f", "-o", str(out), f"http://127.0.0.1:{werkzeug_server.port}/download")
    assert result.returncode == 0, result.stderr
    assert out.read_bytes() == HELLO_PY.read_bytes()


def test_werkzeug_upload_5mib(werkzeug_server: Preforkd) -> None:
    body = upload_body()
    expected = f"{len(body)} {hashlib.sha256(body).hexdigest()}\n"
    with client(werkzeug_server) as http:
        response = http.post("/upload", content=body)
        assert response.status_code == 200
        assert response.text == expected

        def pieces() -> Iterator[bytes]:  # no Content-Length: chunked transfer coding
            for start in range(0, len(body), 256 * 1024):
                yield body[start : start + 256 * 1024]

        response = http.put("/upload", content=pieces())
        assert response.status_code == 200
        assert response.text == expected


@needs_curl
def test_werkzeug_upload_5mib_with_curl(werkzeug_server: Preforkd, tmp_path: Path) -> None:
    body = upload_body()
    path = tmp_path / "upload.bin"
    path.write_bytes(body)
    # A body this large makes curl send "Expect: 100-continue" first.
    result = curl(
        "-f", "--data-binary", f"@{path}", "-H", "Content-Type: application/octet-stream",
        f"http://127.0.0.1:{werkzeug_server.port}/upload",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert result.stdout.decode() == f"{len(body)} {hashlib.sha256(body).hexdigest()}\n"


# --- flask -----------------------------------------------------------------------------------


@pytest.mark.parametrize("spec", ["examples.flask_app:app", "examples.flask_app:create_app()"])
def test_flask(start_server: Start, spec: str) -> None:
    server = start_server(spec)
    with client(server) as http:
        index = http.get("/")
        assert index.status_code == 200
        assert index.text == "Hello from Flask on preforkd!\n"

        data = http.get("/json", params={"a": "1", "b": "two"})
        assert data.headers["content-type"] == "application/json"
        assert data.json() == {"path": "/json", "args": {"a": "1", "b": "two"}, "scheme": "http"}

        payload = bytes(range(256)) * 1000
        echo = http.post("/echo", content=payload,
                         headers={"Content-Type": "application/octet-stream"})  # fmt: skip
        assert echo.status_code == 200
        assert echo.content == payload
        assert echo.headers["content-type"] == "application/octet-stream"

        stream = http.get("/stream")
        assert stream.status_code == 200
        assert stream.text == "line 0\nline 1\nline 2\n"
        assert stream.headers.get("transfer-encoding") == "chunked"


@needs_curl
def test_flask_with_curl(start_server: Start) -> None:
    server = start_server("examples.flask_app:create_app()")
    url = f"http://127.0.0.1:{server.port}"
    assert curl("-f", f"{url}/").stdout == b"Hello from Flask on preforkd!\n"
    echo = curl("-f", "--data-binary", "hello flask", "-H", "Content-Type: text/plain",
                f"{url}/echo")  # fmt: skip
    assert echo.returncode == 0, echo.stderr
    assert echo.stdout == b"hello flask"
    assert curl("-f", f"{url}/stream").stdout == b"line 0\nline 1\nline 2\n"
