"""The error log and the access log: formats, escaping, reopening, threads."""

from __future__ import annotations

import base64
import json
import logging
import os
import re
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from preforkd import logs, parsers
from preforkd.config import COMBINED_FORMAT, Config
from preforkd.logs import AccessLog, AccessRecord, compile_format, escape

# 2026-11-21 20:00:00 UTC
START = 1795291200.25


@pytest.fixture(autouse=True)
def utc(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setenv("TZ", "UTC")
    time.tzset()
    monkeypatch.setattr(logs, "_clf_cache", (-1, ""))
    yield
    monkeypatch.undo()
    time.tzset()


@pytest.fixture
def error_logger() -> Iterator[logging.Logger]:
    """Restore the preforkd logger as it was, whatever setup_error_log did to it."""
    logger = logging.getLogger("preforkd")
    saved = (logger.handlers[:], logger.level, logger.propagate, logs._installed[:])
    yield logger
    for handler in logs._installed:
        handler.close()
    logger.handlers[:], logger.level, logger.propagate, logs._installed[:] = (
        saved[0],
        saved[1],
        saved[2],
        saved[3],
    )


def record(**changes: Any) -> AccessRecord:
    fields: dict[str, Any] = {
        "remote_addr": "203.0.113.7",
        "remote_port": 51234,
        "method": "GET",
        "target": "/search?q=preforkd&page=2",
        "http_version": "1.1",
        "status": 200,
        "response_bytes": 1234,
        "request_headers": [
            ("host", "example.com"),
            ("user-agent", "curl/8.5"),
            ("referer", "https://example.com/"),
            ("x-request-id", "abc"),
        ],
        "response_headers": [("Content-Type", "text/plain"), ("X-Trace", "t1")],
        "start_time": START,
        "duration": 1.2345678,
        "pid": 4242,
    }
    fields.update(changes)
    return AccessRecord(**fields)


def render(fmt: str, **changes: Any) -> str:
    return compile_format(fmt)(record(**changes))


# --- Error log -------------------------------------------------------------------------


def test_error_log_format_and_level(
    error_logger: logging.Logger, capsys: pytest.CaptureFixture[str]
) -> None:
    logs.setup_error_log(Config(app="m:a", log_level="warning"))
    logging.getLogger("preforkd.master").info("hidden")
    logging.getLogger("preforkd.master").warning("worker %d died", 3)
    err = capsys.readouterr().err
    assert re.fullmatch(
        rf"\[\d{{4}}-\d\d-\d\d \d\d:\d\d:\d\d \+0000\] \[{os.getpid()}\] \[WARNING\] "
        r"worker 3 died\n",
        err,
    ), err


def test_error_log_file_reopen_after_rotation(error_logger: logging.Logger, tmp_path: Path) -> None:
    path = tmp_path / "error.log"
    logs.setup_error_log(Config(app="m:a", error_logfile=str(path), log_level="debug"))
    error_logger.debug("before")
    path.rename(tmp_path / "error.log.1")
    error_logger.info("still old file")
    logs.reopen_log_files()
    error_logger.info("after")
    old = (tmp_path / "error.log.1").read_text()
    assert "[DEBUG] before" in old and "still old file" in old and "after" not in old
    assert path.read_text().endswith("[INFO] after\n")


def test_setup_error_log_is_idempotent(error_logger: logging.Logger, tmp_path: Path) -> None:
    logs.setup_error_log(Config(app="m:a"))
    logs.setup_error_log(Config(app="m:a", error_logfile=str(tmp_path / "e.log")))
    assert len(error_logger.handlers) == 1 and not error_logger.propagate


# --- Access log atoms ------------------------------------------------------------------


def test_default_combined_format() -> None:
    assert render(COMBINED_FORMAT) == (
        '203.0.113.7 - - [21/Nov/2026:20:00:00 +0000] "GET /search?q=preforkd&page=2 '
        'HTTP/1.1" 200 1234 "https://example.com/" "curl/8.5"'
    )


@pytest.mark.parametrize(
    ("atom", "expected"),
    [
        ("h", "203.0.113.7"),
        ("l", "-"),
        ("u", "-"),
        ("t", "[21/Nov/2026:20:00:00 +0000]"),
        ("r", "GET /search?q=preforkd&page=2 HTTP/1.1"),
        ("m", "GET"),
        ("U", "/search"),
        ("q", "q=preforkd&page=2"),
        ("H", "HTTP/1.1"),
        ("s", "200"),
        ("B", "1234"),
        ("b", "1234"),
        ("f", "https://example.com/"),
        ("a", "curl/8.5"),
        ("T", "1"),
        ("D", "1234567"),
        ("M", "1234"),
        ("L", "1.234568"),
        ("p", "<4242>"),
        ("{X-Request-Id}i", "abc"),
        ("{missing}i", "-"),
        ("{content-type}o", "text/plain"),
        ("{missing}o", "-"),
    ],
)
def test_atoms(atom: str, expected: str) -> None:
    assert render(f"%({atom})s") == expected


def test_every_declared_atom_renders() -> None:
    fmt = " ".join(f"%({atom})s" for atom in parsers.ACCESS_LOG_ATOMS)
    assert "{name}" not in render(fmt)  # header atoms were rendered, not echoed


def test_atoms_for_edge_values() -> None:
    assert render("%(b)s %(B)s", response_bytes=0) == "- 0"
    assert render("%(U)s|%(q)s", target="/plain") == "/plain|"
    assert render("%(H)s %(r)s", http_version="2", target="/") == "HTTP/2 GET / HTTP/2"
    assert render("%(f)s %(a)s", request_headers=[]) == "- -"
    assert render("%(h)s", remote_addr="") == "-"
    headers = [("x-forwarded-for", "10.0.0.1"), ("x-forwarded-for", "10.0.0.2")]
    assert render("%({x-forwarded-for}i)s", request_headers=headers) == "10.0.0.1, 10.0.0.2"
    assert render("100%% %(s)s") == "100% 200"


def test_time_uses_local_offset_and_english_months(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TZ", "XYZ-05:30")  # POSIX TZ: UTC+05:30, no tzdata needed
    time.tzset()
    monkeypatch.setattr(logs, "_clf_cache", (-1, ""))
    assert render("%(t)s") == "[22/Nov/2026:01:30:00 +0530]"


def test_basic_auth_user() -> None:
    token = base64.b64encode(b"alice:s3cret").decode()
    assert render("%(u)s", request_headers=[("authorization", f"Basic {token}")]) == "alice"
    assert render("%(u)s", request_headers=[("authorization", "Basic !!!")]) == "-"
    assert render("%(u)s", request_headers=[("authorization", "Bearer xyz")]) == "-"
    evil = base64.b64encode(b'eve"\n:x').decode()
    assert render("%(u)s", request_headers=[("authorization", f"basic {evil}")]) == (
        "eve\\x22\\x0A"
    )


@pytest.mark.parametrize(
    ("fmt", "message"),
    [
        ("%(nope)s", "unknown access log atom %(nope)s"),
        ("%(h)d", "stray '%'"),
        ("50% off", "stray '%'"),
        ("%({}i)s", "unknown access log atom"),
    ],
)
def test_bad_formats(fmt: str, message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        compile_format(fmt)


# --- Injection and escaping ------------------------------------------------------------


def test_text_format_cannot_be_injected() -> None:
    line = render(
        COMBINED_FORMAT,
        target='/x HTTP/1.1" 200 0 "-" "-"\n1.2.3.4 - - [forged]',
        request_headers=[("user-agent", 'ua\r\n"quoted" \\ \x1b[31m'), ("referer", "r\x00")],
    )
    assert "\n" not in line and "\r" not in line and "\x1b" not in line
    assert line.count('"') == 6  # only the format's own quotes
    assert "/x HTTP/1.1\\x22 200 0 \\x22-\\x22 \\x22-\\x22\\x0A1.2.3.4" in line
    assert '"ua\\x0D\\x0A\\x22quoted\\x22 \\x5C \\x1B[31m"' in line
    assert '"r\\x00"' in line


def test_escape() -> None:
    assert escape("plain /path?a=1") == "plain /path?a=1"
    assert escape("caf\xe9 \u20ac \U0001f600 \x7f") == "caf\\xE9 \\u20AC \\U0001F600 \\x7F"


def test_json_format_keys_and_escaping() -> None:
    token = base64.b64encode(b"bob:pw").decode()
    line = render(
        "json",
        target='/a"b\n?x=\u20ac',
        request_headers=[("user-agent", "ua\x00\r\n"), ("authorization", f"Basic {token}")],
        remote_port=None,
    )
    assert "\n" not in line and line.isascii()
    data = json.loads(line)
    assert tuple(data) == logs.JSON_KEYS
    assert data == {
        "time": "2026-11-21T20:00:00.250+00:00",
        "remote_addr": "203.0.113.7",
        "remote_port": None,
        "user": "bob",
        "method": "GET",
        "target": '/a"b\n?x=\u20ac',
        "path": '/a"b\n',
        "query": "x=\u20ac",
        "protocol": "HTTP/1.1",
        "status": 200,
        "bytes": 1234,
        "duration": 1.234568,
        "referer": None,
        "user_agent": "ua\x00\r\n",
        "pid": 4242,
    }


# --- Writing ---------------------------------------------------------------------------


def test_disabled_access_log_does_nothing(capsys: pytest.CaptureFixture[str]) -> None:
    access_log = AccessLog(None, COMBINED_FORMAT)
    assert not access_log.enabled
    access_log.log(record())
    access_log.reopen()
    assert capsys.readouterr() == ("", "")


def test_stdout(capsys: pytest.CaptureFixture[str]) -> None:
    access_log = AccessLog("-", "%(s)s %(U)s")
    access_log.log(record())
    assert capsys.readouterr().out == "200 /search\n"


def test_file_and_reopen_after_rotation(tmp_path: Path) -> None:
    path = tmp_path / "access.log"
    access_log = AccessLog(str(path), "%(s)s")
    access_log.log(record(status=201))
    path.rename(tmp_path / "access.log.1")
    access_log.log(record(status=202))
    logs.reopen_log_files()
    access_log.log(record(status=203))
    access_log.close()
    assert (tmp_path / "access.log.1").read_text() == "201\n202\n"
    assert path.read_text() == "203\n"


def test_many_threads_write_whole_lines(tmp_path: Path) -> None:
    path = tmp_path / "access.log"
    access_log = AccessLog(str(path), "json")

    def worker(n: int) -> None:
        for i in range(100):
            access_log.log(record(target=f"/t{n}/{i}", request_headers=[("x", "y" * 500)]))

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    access_log.close()
    targets = [json.loads(line)["target"] for line in path.read_text().splitlines()]
    assert sorted(targets) == sorted(f"/t{n}/{i}" for n in range(8) for i in range(100))


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full")
def test_write_failure_is_reported_once_and_never_raises(
    error_logger: logging.Logger, caplog: pytest.LogCaptureFixture
) -> None:
    error_logger.propagate = True  # to caplog's handler on the root logger
    access_log = AccessLog("/dev/full", "%(s)s")  # every write fails with ENOSPC
    access_log.log(record())
    access_log.log(record())
    access_log.close()
    failures = [r for r in caplog.records if "cannot write to the access log" in r.message]
    assert len(failures) == 1


def test_every_declared_atom_has_a_renderer() -> None:
    # An atom the format validator accepts but the renderer lacks would log "-" silently.
    from preforkd import logs
    from preforkd.parsers import ACCESS_LOG_ATOMS

    assert set(logs._ATOMS) == {a for a in ACCESS_LOG_ATOMS if not a.startswith("{")}
