"""What a worker counts for status and metrics (worker/stats.py)."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from preforkd.worker.stats import RateMeter, RequestStats


def cycle(status: str | None, version: str = "1.1", duration: float = 0.003, read: int = 0) -> Any:
    stream = SimpleNamespace(bytes_read=read)
    return SimpleNamespace(
        status=status, duration=duration, bytes_sent=10,
        request=SimpleNamespace(http_version=version), environ={"wsgi.input": stream},
    )  # fmt: skip


def test_requests_by_protocol_status_class_and_duration() -> None:
    stats = RequestStats()
    stats.record(cycle("200 OK"))
    stats.record(cycle("404 Not Found", duration=0.2))
    stats.record(cycle("503 Busy", version="2", duration=60.0, read=7))
    stats.record(cycle(None))  # the app failed before start_response: a 500 went out
    stats.record(cycle("999 Odd"))  # out of range: counted with the server errors
    assert stats.by_status == [0, 1, 0, 1, 2, 0, 0, 0, 0, 1]
    assert stats.durations[0] == 3  # <= 5 ms
    assert stats.durations[5] == 1  # 0.1 < 0.2 <= 0.25
    assert stats.durations[-1] == 1  # over 10 s: +Inf
    assert stats.body_in == 7 and stats.body_out == 50
    assert abs(stats.duration_sum - 60.209) < 1e-9


def test_rate_over_the_window() -> None:
    meter = RateMeter(window=5.0)
    assert meter.update(100.0, 0) == 0.0
    assert meter.update(101.0, 50) == 50.0
    assert meter.update(102.0, 100) == 50.0
    for second in range(103, 110):
        rate = meter.update(float(second), 100)  # idle from here
    assert rate == 0.0


def test_an_app_that_removed_wsgi_input_is_still_counted() -> None:
    stats = RequestStats()
    gone = cycle("200 OK")
    gone.environ.clear()
    gone.environ["wsgi.input"] = object()  # replaced by something without bytes_read
    stats.record(gone)
    stats.record(cycle("200 OK"))
    assert stats.by_status[1] == 2 and stats.body_in == 0
