"""A real server with the native accelerators answers exactly as one without them.

Every request of the corpus (tests/data/requests: valid, malformed and hostile) goes to two
servers, one started with ``PREFORKD_PURE_PYTHON=1``; the responses must be the same
bytes, but for the Date field. The app mirrors the request back, so a difference in what
the app was given shows too.
"""

from __future__ import annotations

import re
import socket
from pathlib import Path

import pytest

from preforkd import native
from tests.integration.conftest import Start
from tests.proto.h1_support import CORPUS, decode_http

_DATE = re.compile(rb"\r\nDate: [^\r]*")
_PORT = re.compile(rb'"SERVER_PORT": "\d+"')


def _exchange(port: int, data: bytes) -> bytes:
    """Send ``data``, end our side, and read until the server closes (or 5 s pass)."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        try:
            sock.sendall(data)
            sock.shutdown(socket.SHUT_WR)
        except OSError:
            pass  # the server answered and closed before reading it all
        received = b""
        try:
            while chunk := sock.recv(65536):
                received += chunk
        except (ConnectionResetError, TimeoutError):
            pass
    return _PORT.sub(b'"SERVER_PORT": "?"', _DATE.sub(b"", received))


@pytest.mark.skipif("h1head" not in native.available(), reason="native parser not built")
def test_the_corpus_gets_the_same_answers_with_and_without_native_code(
    start_server: Start,
) -> None:
    fast = start_server("mirror:app", "--workers", "1")
    pure = start_server("mirror:app", "--workers", "1", env={"PREFORKD_PURE_PYTHON": "1"})
    assert "native: h1head" in fast.log()
    assert "native: none (pure Python)" in pure.log()
    cases = sorted(CORPUS.glob("*/*.http"))
    assert len(cases) > 150
    differ, answered = [], 0
    for path in cases:
        data = decode_http(path.read_text(encoding="utf-8"))
        answer = _exchange(fast.port, data)
        if answer != _exchange(pure.port, data):
            differ.append(Path(path).relative_to(CORPUS).as_posix())
        answered += answer.startswith(b"HTTP/1.1 200 ")
    assert differ == []
    assert answered > 50  # the valid half reached the app (EOF in a head gets no answer)
