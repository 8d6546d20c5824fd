"""The metrics page (master/metrics.py), read with prometheus_client's own parser."""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families

from preforkd.heartbeat import Beat
from preforkd.master.metrics import Tallies, WorkerSample, metrics_reply, render


def beat(requests_2xx: int, h2_5xx: int = 0, conns: int = 3, h2_conns: int = 1) -> Beat:
    by_status = [0] * 10
    by_status[1] = requests_2xx
    by_status[9] = h2_5xx
    durations = [0] * 12
    durations[0] = requests_2xx + h2_5xx
    return Beat(
        1, 1.0, requests_2xx, conns, 2, False, h2_conns, 0.0, 0.0, "", "",
        tuple(by_status), tuple(durations), 0.5, 100, 200,
    )  # fmt: skip


def families(text: str) -> dict[str, dict[str, float]]:
    found: dict[str, dict[str, float]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = ",".join(f"{k}={v}" for k, v in sorted(sample.labels.items()))
            found.setdefault(family.name, {})[f"{sample.name}{{{labels}}}"] = sample.value
    return found


def test_live_workers_and_retired_counts_are_summed() -> None:
    tallies = Tallies()
    tallies.retire(beat(5))  # a worker that exited
    tallies.restarts["reload"] += 2
    tallies.boot_failures = 1
    samples = [WorkerSample(1, 2, beat(10, h2_5xx=1), 30_000_000), WorkerSample(2, 2, None, None)]
    page = families(render(tallies, samples, generation=2, wanted=2))
    requests = page["preforkd_requests"]
    assert requests["preforkd_requests_total{protocol=h1,status=2xx}"] == 15
    assert requests["preforkd_requests_total{protocol=h2,status=5xx}"] == 1
    histogram = page["preforkd_request_duration_seconds"]
    assert histogram["preforkd_request_duration_seconds_count{}"] == 16
    assert histogram["preforkd_request_duration_seconds_bucket{le=0.005}"] == 16
    assert histogram["preforkd_request_duration_seconds_sum{}"] == 1.0
    conns = page["preforkd_connections"]
    assert conns == {
        "preforkd_connections{protocol=h1}": 2,
        "preforkd_connections{protocol=h2}": 1,
    }
    assert page["preforkd_requests_in_flight"]["preforkd_requests_in_flight{}"] == 2
    restarts = page["preforkd_worker_restarts"]
    assert restarts["preforkd_worker_restarts_total{reason=reload}"] == 2
    assert restarts["preforkd_worker_restarts_total{reason=crash}"] == 0
    assert page["preforkd_worker_boot_failures"]["preforkd_worker_boot_failures_total{}"] == 1
    assert page["preforkd_request_body_bytes"]["preforkd_request_body_bytes_total{}"] == 200
    rss = page["preforkd_worker_resident_memory_bytes"]
    assert rss == {"preforkd_worker_resident_memory_bytes{generation=2,worker=1}": 30_000_000}
    assert page["preforkd_workers"]["preforkd_workers{}"] == 2
    assert page["preforkd_generation"]["preforkd_generation{}"] == 2


def test_render_does_not_change_the_tallies() -> None:
    tallies = Tallies()
    render(tallies, [WorkerSample(1, 1, beat(10), None)], 1, 1)
    assert tallies.by_status == [0] * 10


def test_http_replies() -> None:
    ok, close = metrics_reply("GET /metrics HTTP/1.1\r\nHost: x", lambda: "page\n")
    assert ok.startswith(b"HTTP/1.1 200 OK\r\n") and ok.endswith(b"\r\n\r\npage\n")
    assert b"Content-Type: text/plain; version=0.0.4" in ok and not close
    head, _ = metrics_reply("HEAD /metrics HTTP/1.1", lambda: "page\n")
    assert head.endswith(b"\r\n\r\n") and b"Content-Length: 5" in head
    missing, _ = metrics_reply("GET / HTTP/1.1", lambda: "")
    assert missing.startswith(b"HTTP/1.1 404")
    post, _ = metrics_reply("POST /metrics HTTP/1.1", lambda: "")
    assert post.startswith(b"HTTP/1.1 405")
    bad, close = metrics_reply("garbage", lambda: "")
    assert bad.startswith(b"HTTP/1.1 400") and close
    _, close = metrics_reply("GET /metrics HTTP/1.0", lambda: "")
    assert close
    _, close = metrics_reply("GET /metrics HTTP/1.1\r\nConnection: close", lambda: "")
    assert close
