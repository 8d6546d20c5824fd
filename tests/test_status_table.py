"""``preforkd status``'s table and the control socket's requests, without a server."""

from __future__ import annotations

import json
from typing import Any

import pytest

from preforkd.heartbeat import Beat
from preforkd.master.control import parse_request, worker_row, worker_state
from preforkd.master.workers import Worker
from preforkd.status import count, duration, render, stuck_after


def status(request_timeout: float = 0.0) -> dict[str, Any]:
    worker = Worker(1, 4242, 2, started=100.0, ready=True)
    beat = Beat(4242, 109.5, 12345, 5, 1, False, 2, 33.3, 104.0, "POST", "/upload")
    return {
        "master": {
            "pid": 4000, "version": "0.1.0", "app": "app:application", "binds": "127.0.0.1:8000",
            "uptime": 3725.0, "generation": 2, "state": "running", "workers_wanted": 1,
            "request_timeout": request_timeout,
        },
        "workers": [worker_row(worker, beat, now=110.0)],
    }  # fmt: skip


def test_worker_row() -> None:
    (row,) = status()["workers"]
    assert row["connections"] == {"h1": 3, "h2": 2}
    assert row["oldest"] == {"method": "POST", "path": "/upload", "age": 6.0}
    assert row["age"] == 10.0 and row["heartbeat_age"] == 0.5 and row["rps"] == 33.3
    json.dumps(row)  # what the control socket sends


def test_worker_states() -> None:
    booting = Worker(1, 1, 1, started=0.0)
    assert worker_state(booting, None) == "booting"
    serving = Worker(1, 1, 1, started=0.0, ready=True)
    assert worker_state(serving, Beat(1, 1.0, 0, 0, 0, False)) == "serving"
    assert worker_state(serving, Beat(1, 1.0, 0, 0, 0, True)) == "draining"


def test_table() -> None:
    lines = render(status())
    assert lines[0] == "preforkd 0.1.0 · master pid 4000 · app:application · 127.0.0.1:8000"
    assert lines[1].startswith("running · generation 2 · up 1h02m · 1 worker(s), 1 wanted")
    assert lines[3].split() == [
        "WORKER", "PID", "GEN", "AGE", "STATE", "REQS", "REQ/S", "H1", "H2", "BUSY",
        "OLDEST", "REQUEST", "RSS", "BEAT",
    ]  # fmt: skip
    assert lines[4].split()[:10] == [
        "1",
        "4242",
        "2",
        "10s",
        "serving",
        "12.3k",
        "33.3",
        "3",
        "2",
        "1",
    ]
    assert "POST /upload 6.0s" in lines[4]


def test_stuck_rows_are_marked() -> None:
    assert stuck_after(status(0.0)["master"]) == 15.0
    assert stuck_after(status(10.0)["master"]) == 5.0
    assert render(status(10.0), ("<", ">"))[4].startswith("<")  # 6 s > 10 s / 2
    assert not render(status(20.0), ("<", ">"))[4].startswith("<")


def test_units() -> None:
    assert [duration(s) for s in (0.25, 42, 3725, 200_000)] == ["0.2s", "42s", "1h02m", "2d07h"]
    assert [count(n) for n in (999, 12_345, 12_345_678)] == ["999", "12.3k", "12.3M"]


def test_requests() -> None:
    assert parse_request('{"command": "status"}') == "status"
    for bad in ("status", "[]", '{"cmd": "x"}', '{"command": 3}'):
        with pytest.raises(ValueError):
            parse_request(bad)
