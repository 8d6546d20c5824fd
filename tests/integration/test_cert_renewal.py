"""Certificate renewal: HUP serves the renewed files on new connections, without a
restart; a broken renewal keeps the certificate being served and logs why."""

from __future__ import annotations

import signal
import ssl
from pathlib import Path

import trustme

from tests.integration.conftest import Start
from tests.integration.harness import Preforkd, wait_for


def write_leaf(ca: trustme.CA, cert: Path, key: Path) -> bytes:
    """Issue a leaf for 127.0.0.1, write it; return its DER bytes."""
    leaf = ca.issue_cert("127.0.0.1", "localhost")
    leaf.private_key_pem.write_to_path(key)
    leaf.cert_chain_pems[0].write_to_path(cert)
    for pem in leaf.cert_chain_pems[1:]:
        pem.write_to_path(cert, append=True)
    return ssl.PEM_cert_to_DER_cert(leaf.cert_chain_pems[0].bytes().decode())


def served(server: Preforkd) -> bytes | None:
    """The certificate a new connection gets (DER), or None if none could be had."""
    assert server.port is not None
    try:
        pem = ssl.get_server_certificate(("127.0.0.1", server.port), timeout=5)
    except OSError:
        return None
    return ssl.PEM_cert_to_DER_cert(pem)


def start_tls(start_server: Start, tmp_path: Path) -> tuple[Preforkd, Path, Path, bytes]:
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    first = write_leaf(trustme.CA(), cert, key)
    server = start_server(
        "examples.hello:app", "--certfile", str(cert), "--keyfile", str(key), wait=False
    )
    wait_for(lambda: served(server) == first, what="the first certificate")
    return server, cert, key, first


def test_hup_serves_the_renewed_certificate(start_server: Start, tmp_path: Path) -> None:
    server, cert, key, first = start_tls(start_server, tmp_path)
    renewed = write_leaf(trustme.CA(), cert, key)  # another CA, another serial
    assert renewed != first
    server.signal(signal.SIGHUP)
    server.wait_log(r"generation 2 is ready")
    wait_for(lambda: served(server) == renewed, what="the renewed certificate")
    server.check_running()


def test_broken_renewal_keeps_the_old_certificate(start_server: Start, tmp_path: Path) -> None:
    server, cert, key, first = start_tls(start_server, tmp_path)
    cert.write_text("-----BEGIN CERTIFICATE-----\nhalf written\n")
    server.signal(signal.SIGHUP)
    log = server.wait_log(r"HUP: .*cannot load the certificate.*keeping the current")
    assert "starting generation 2" not in log
    assert served(server) == first
    # Then a good renewal: the next HUP serves it.
    renewed = write_leaf(trustme.CA(), cert, key)
    server.signal(signal.SIGHUP)
    wait_for(lambda: served(server) == renewed, what="the renewed certificate")


def test_mismatched_key_keeps_the_old_certificate(start_server: Start, tmp_path: Path) -> None:
    server, cert, _, first = start_tls(start_server, tmp_path)
    write_leaf(trustme.CA(), cert, tmp_path / "unused.pem")  # cert renewed, its key not
    server.signal(signal.SIGHUP)
    server.wait_log(r"HUP: .*cannot load the certificate")
    assert served(server) == first
