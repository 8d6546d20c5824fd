"""The real h2spec (github.com/summerwind/h2spec), when it is installed.

h2spec is a Go program that cannot be installed from the package registries, so this
test runs only where the binary is found: on PATH as ``h2spec`` or named by the ``H2SPEC``
environment variable (``/work/shared/tools/build-h2spec.sh`` builds it from source). The
Python cases in ``test_h2_conformance.py`` reproduce its suites and always run.

All of h2spec's cases, strict ones included, must pass on TLS and on an HTTP/2-only
cleartext listener. On a cleartext listener shared with HTTP/1.1 one case is different by
design: "3.5, Sends invalid connection preface" sends ``INVALID CONNECTION PREFACE\\r\\n\\r\\n``,
which on that listener is a malformed HTTP/1.1 request and gets its 400 (RFC 9112 §3),
where h2spec expects GOAWAY or a silent close.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
import trustme

from tests.integration.conftest import Start
from tests.integration.harness import free_port

H2SPEC = os.environ.get("H2SPEC") or shutil.which("h2spec")
pytestmark = [
    pytest.mark.skipif(not H2SPEC, reason="h2spec not installed (set H2SPEC=path to use it)"),
    pytest.mark.timeout(300),
]
SHARED_LISTENER_EXCEPTION = "http2/3.5: Sends invalid connection preface"


def run_h2spec(port: int, tmp_path: Path, *flags: str) -> set[str]:
    """The failed cases, as "SECTION: TITLE" (e.g. "http2/3.5: Sends ...").

    A case that fails is run once more on its own, and counts only if it fails again.
    Some cases race with a server that answers at once: in "6.9.1/3" the hello app's
    response may end the stream (RST_STREAM(NO_ERROR), which RFC 9113 §8.1 allows) before
    h2spec's WINDOW_UPDATE frames for it arrive. A real non-conformance fails every time.
    """
    failed = _h2spec(port, tmp_path, flags)
    for case_id in list(failed):
        if not _h2spec(port, tmp_path, (*flags, case_id)):  # that case alone passed
            del failed[case_id]
    return set(failed.values())


def _h2spec(port: int, tmp_path: Path, args: tuple[str, ...]) -> dict[str, str]:
    """Run h2spec; {case id ("http2/6.9.1/3"): "SECTION: TITLE"} of the failed cases."""
    report = tmp_path / f"h2spec-{port}.xml"
    assert H2SPEC is not None
    done = subprocess.run(
        [H2SPEC, "-h", "127.0.0.1", "-p", str(port), "-o", "5", "-S", "-j", str(report), *args],
        capture_output=True, text=True, timeout=240,
    )  # fmt: skip
    assert report.exists(), done.stdout + done.stderr
    failed = {}
    for suite in ET.parse(report).getroot().iter("testsuite"):
        for number, case in enumerate(suite.iter("testcase"), start=1):
            if case.find("failure") is not None or case.find("error") is not None:
                title = f"{case.get('package')}: {case.get('classname')}"
                failed[f"{case.get('package')}/{number}"] = title
    if failed:
        print(done.stdout[-4000:])
    return failed


def test_h2spec_on_cleartext_listeners(start_server: Start, tmp_path: Path) -> None:
    h2only = free_port()
    server = start_server(
        "examples.hello:app", "--bind", f"127.0.0.1:{h2only}",
        "--bind-protocols", f"127.0.0.1:{h2only}=h2",
    )  # fmt: skip
    assert run_h2spec(h2only, tmp_path) == set()
    shared = run_h2spec(server.port or 0, tmp_path)
    assert shared <= {SHARED_LISTENER_EXCEPTION}, shared


def test_h2spec_on_tls(start_server: Start, tmp_path: Path) -> None:
    ca = trustme.CA()
    issued = ca.issue_cert("127.0.0.1", "localhost")
    cert, key = tmp_path / "server.pem", tmp_path / "server.key"
    issued.private_key_pem.write_to_path(key)
    for i, pem in enumerate(issued.cert_chain_pems):
        pem.write_to_path(cert, append=i > 0)
    port = free_port()
    start_server(
        "examples.hello:app", "--bind", f"127.0.0.1:{port}", "--certfile", str(cert),
        "--keyfile", str(key), bind=False, wait=False,
    )  # fmt: skip
    import socket
    import time

    deadline = time.monotonic() + 15
    while True:  # until the TLS port accepts (a deadline loop, not a pause)
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            assert time.monotonic() < deadline, "the TLS server did not start"
            time.sleep(0.05)
    assert run_h2spec(port, tmp_path, "-t", "-k") == set()
