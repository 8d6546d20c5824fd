"""The worker's side of supervision, in process: heartbeat publishing, --request-timeout,
the --reload error page, --dev, and forgetting preloaded modules before a fresh import."""

from __future__ import annotations

import logging
import sys
import threading
import time
import types
from dataclasses import dataclass, field
from typing import Any

import pytest

from preforkd.config import Config
from preforkd.devmode import apply_dev, error_location, load_error_app
from preforkd.errors import AppLoadError
from preforkd.heartbeat import HeartbeatTable
from preforkd.master.process import forget_modules
from preforkd.worker.stats import RequestStats
from preforkd.worker.watchdog import Watchdog


@dataclass
class FakeRequest:
    method: str = "GET"
    target: str = "/slow?x=1"


@dataclass
class FakeCycle:
    request: FakeRequest = field(default_factory=FakeRequest)


@dataclass
class FakeState:
    """The WorkerState attributes the watchdog reads."""

    requests_served: int = 0
    connections: set[Any] = field(default_factory=set)
    in_flight: int = 0
    draining: bool = False
    running: dict[int, tuple[float, Any]] = field(default_factory=dict)
    stats: RequestStats = field(default_factory=RequestStats)


def test_tick_publishes_the_heartbeat():
    table = HeartbeatTable(capacity=2)
    try:
        state = FakeState(requests_served=12, connections={1, 2, 3}, in_flight=2)
        watchdog = Watchdog(state, table.slot(1), 0.0, lambda graceful: None, 4321)  # type: ignore[arg-type]
        before = time.monotonic()
        watchdog.tick()
        beat = table.slot(1).read()
        assert beat is not None
        assert (beat.pid, beat.requests, beat.connections, beat.in_flight) == (4321, 12, 3, 2)
        assert before <= beat.tick <= time.monotonic()
        assert not beat.draining
        state.draining = True
        watchdog.tick()
        assert table.slot(1).read().draining  # type: ignore[union-attr]
    finally:
        table.close()


def test_request_over_the_timeout_logs_its_stack_once_and_recycles(caplog):
    stops: list[bool] = []
    release = threading.Event()

    def stuck_in_the_app() -> None:
        release.wait(10)

    thread = threading.Thread(target=stuck_in_the_app, name="preforkd-w1_0")
    thread.start()
    try:
        assert thread.ident is not None
        state = FakeState(running={thread.ident: (time.monotonic() - 5.0, FakeCycle())})
        watchdog = Watchdog(state, None, 2.0, stops.append, 1)  # type: ignore[arg-type]
        with caplog.at_level(logging.INFO, "preforkd.worker"):
            watchdog.tick()
            watchdog.tick()  # reported once
        assert stops == [True]
        (message,) = [m for m in caplog.messages if m.startswith("Request")]
        assert message.startswith(
            "Request GET /slow?x=1 has been running for 5.0s (--request-timeout 2s) in thread "
            "preforkd-w1_0; its stack:"
        )
        assert "in stuck_in_the_app" in message and "release.wait(10)" in message
        assert "Recycling this worker" in caplog.text
    finally:
        release.set()
        thread.join()


def test_requests_within_the_timeout_or_no_timeout_are_left_alone():
    stops: list[bool] = []
    recent = FakeState(running={1: (time.monotonic(), FakeCycle())})
    Watchdog(recent, None, 2.0, stops.append, 1).tick()  # type: ignore[arg-type]
    old = FakeState(running={1: (time.monotonic() - 100, FakeCycle())})
    Watchdog(old, None, 0.0, stops.append, 1).tick()  # type: ignore[arg-type]
    assert stops == []


def test_already_draining_worker_is_not_stopped_again(caplog):
    stops: list[bool] = []
    state = FakeState(draining=True, running={1: (time.monotonic() - 5, FakeCycle())})
    Watchdog(state, None, 1.0, stops.append, 1).tick()  # type: ignore[arg-type]
    assert stops == []
    assert "(the thread has just finished)" in caplog.text  # ident 1 is no live thread


# --- dev mode ---------------------------------------------------------------------------


def test_dev_expands_to_reload_debug_and_access_log():
    cfg = apply_dev(Config(app="a:b", dev=True))
    assert (cfg.reload, cfg.log_level, cfg.access_logfile, cfg.workers) == (True, "debug", "-", 1)
    explicit = apply_dev(Config(app="a:b", dev=True, log_level="warning", access_logfile="x"))
    assert (explicit.log_level, explicit.access_logfile) == ("warning", "x")
    assert apply_dev(Config(app="a:b")) == Config(app="a:b")


def test_error_page_shows_the_error_and_where():
    details = (
        "Traceback (most recent call last):\n"
        '  File "/srv/loading.py", line 118, in _import\n'
        '  File "/srv/app.py", line 3, in <module>\n'
        "NameError: name 'x' is not defined\n"
    )
    exc = AppLoadError("failed to import 'app': NameError: name 'x' is not defined", details)
    assert error_location(exc) == "/srv/app.py:3"
    syntax = AppLoadError("failed to import 'app': SyntaxError: bad (/srv/app.py, line 7)")
    assert error_location(syntax) == "/srv/app.py:7"
    assert error_location(AppLoadError("module 'x' not found")) is None

    seen: list[tuple[str, list[tuple[str, str]]]] = []
    body = b"".join(load_error_app(exc)({}, lambda s, h: seen.append((s, h))))
    assert seen[0][0] == "500 Internal Server Error"
    assert ("Content-Length", str(len(body))) in seen[0][1]
    text = body.decode()
    assert text.startswith("preforkd: the application failed to load (/srv/app.py:3)")
    assert "NameError: name 'x' is not defined" in text and details.strip() in text


# --- forgetting preloaded modules ---------------------------------------------------------


def test_forget_modules_keeps_extension_modules(monkeypatch: pytest.MonkeyPatch):
    import importlib.machinery

    pure = types.ModuleType("pfd_test_pure")
    pure.__file__ = "/x/pfd_test_pure.py"
    monkeypatch.setitem(sys.modules, "pfd_test_pure", pure)
    suffixes = tuple(importlib.machinery.EXTENSION_SUFFIXES)
    extension = next(
        name for name, module in sys.modules.items()
        if str(getattr(module, "__file__", "")).endswith(suffixes)
    )  # fmt: skip
    forget_modules(["pfd_test_pure", extension, "pfd_test_not_imported"])
    assert "pfd_test_pure" not in sys.modules
    assert extension in sys.modules
