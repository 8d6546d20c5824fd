"""``preforkd check`` against real preforkd processes: h1, h2c, TLS h2 with ALPN, failures."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import trustme

from preforkd.check import main, parse_statuses
from tests.integration.conftest import Start
from tests.integration.harness import ROOT, Preforkd, wait_for


def url(server: Preforkd, path: str = "/", scheme: str = "http") -> str:
    return f"{scheme}://127.0.0.1:{server.port}{path}"


def test_h1_healthy(start_server: Start, capsys: pytest.CaptureFixture[str]) -> None:
    server = start_server("probe:app")
    assert main([url(server), "--http1"]) == 0
    assert "200 over HTTP/1.1" in capsys.readouterr().out


def test_h2c_healthy_reports_ping(start_server: Start, capsys: pytest.CaptureFixture[str]) -> None:
    server = start_server("probe:app")
    assert main([url(server), "--h2c"]) == 0
    out = capsys.readouterr().out
    assert "200 over h2" in out
    assert "PING round trip" in out


def test_wrong_status_is_unhealthy(start_server: Start, capsys: pytest.CaptureFixture[str]) -> None:
    server = start_server("probe:app")
    assert main([url(server, "/status?code=503")]) == 1
    assert main([url(server, "/status?code=503"), "--h2c"]) == 1
    assert "unexpected status" in capsys.readouterr().err
    assert main([url(server, "/status?code=503"), "--status", "5xx"]) == 0
    assert main([url(server, "/status?code=302")]) == 0  # 200-399 by default
    assert main([url(server, "/status?code=302"), "--status", "200"]) == 1


def test_refused_is_unhealthy(capsys: pytest.CaptureFixture[str]) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))  # bound, never listening: connections are refused
        port = sock.getsockname()[1]
        assert main([f"http://127.0.0.1:{port}/"]) == 1
    assert "cannot connect" in capsys.readouterr().err


def test_timeout_is_unhealthy(capsys: pytest.CaptureFixture[str]) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()  # accepts in the kernel, never answers
        port = sock.getsockname()[1]
        started = time.monotonic()
        assert main([f"http://127.0.0.1:{port}/", "--timeout", "0.5"]) == 1
        assert time.monotonic() - started < 10
    assert "no answer within 0.5s" in capsys.readouterr().err


def test_usage_errors() -> None:
    assert main([]) == 2
    assert main(["ftp://example/"]) == 2
    assert main(["http://127.0.0.1:1/", "--status", "abc"]) == 2
    assert main(["http://127.0.0.1:1/", "--h2c", "--http1"]) == 2


def test_parse_statuses() -> None:
    assert parse_statuses("200") == {200}
    assert parse_statuses("2xx,304") == set(range(200, 300)) | {304}
    assert parse_statuses("200-204") == set(range(200, 205))
    with pytest.raises(ValueError):
        parse_statuses("700")


@pytest.fixture
def tls(tmp_path: Path) -> dict[str, str]:
    ca = trustme.CA()
    leaf = ca.issue_cert("127.0.0.1", "localhost")
    files = {"cert": tmp_path / "cert.pem", "key": tmp_path / "key.pem", "ca": tmp_path / "ca.pem"}
    leaf.private_key_and_cert_chain_pem.write_to_path(files["cert"])
    leaf.private_key_pem.write_to_path(files["key"])
    ca.cert_pem.write_to_path(files["ca"])
    return {k: str(v) for k, v in files.items()}


def test_tls_h2_with_alpn(
    start_server: Start, tls: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    server = start_server("probe:app", "--certfile", tls["cert"], "--keyfile", tls["key"],
                          wait=False)  # fmt: skip
    wait_for(lambda: main([url(server, scheme="https"), "--cacert", tls["ca"], "-q"]) == 0)
    capsys.readouterr()
    assert main([url(server, scheme="https"), "--cacert", tls["ca"]]) == 0
    assert "200 over h2" in capsys.readouterr().out  # ALPN chose h2
    assert main([url(server, scheme="https"), "--cacert", tls["ca"], "--http1"]) == 0
    assert "200 over HTTP/1.1" in capsys.readouterr().out
    assert main([url(server, scheme="https")]) == 1  # not trusted by the system store
    assert "TLS handshake failed" in capsys.readouterr().err
    assert main([url(server, scheme="https"), "--insecure"]) == 0


def test_cli_subcommand(start_server: Start) -> None:
    server = start_server("probe:app")
    done = subprocess.run(
        [sys.executable, "-m", "preforkd", "check", url(server), "--h2c"],
        capture_output=True, text=True, timeout=30, cwd=ROOT,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "over h2" in done.stdout
