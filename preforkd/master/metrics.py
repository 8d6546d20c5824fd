"""Prometheus metrics, summed over all workers by the master (``--metrics-bind``).

Theory of operation. Each worker counts what it serves (``worker/stats.py``) and
publishes the counts in its heartbeat slot at every tick. The master, on a scrape, adds
up the slots of the live workers and the last counts of the workers that have exited
(:class:`Tallies`, updated as each one is reaped), so every counter only grows across
restarts, reloads and recycling; gauges (in flight, connections, RSS) are the live
workers' sum. A new master (USR2) starts from zero, which Prometheus' ``rate()`` reads
as a counter reset. The page is the text exposition format 0.0.4, rendered here without
a client library: the master serves it from its own loop (``master/endpoint.py``).
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field

from preforkd import __version__
from preforkd.heartbeat import DURATION_BUCKETS, PROTOCOLS, STATUS_CLASSES, Beat

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
RESTART_REASONS = ("recycle", "timeout", "crash", "reload")
_BY_STATUS = len(PROTOCOLS) * len(STATUS_CLASSES)


@dataclass
class Tallies:
    """What the master keeps of workers that are gone, and its own events."""

    by_status: list[int] = field(default_factory=lambda: [0] * _BY_STATUS)
    durations: list[int] = field(default_factory=lambda: [0] * (len(DURATION_BUCKETS) + 1))
    duration_sum: float = 0.0
    body_in: int = 0
    body_out: int = 0
    restarts: Counter[str] = field(default_factory=Counter)
    boot_failures: int = 0
    started: float = field(default_factory=time.time)  # the master's start, Unix time

    def retire(self, beat: Beat) -> None:
        """Keep the counts of a worker that exited (its last heartbeat)."""
        _add(self.by_status, beat.by_status)
        _add(self.durations, beat.durations)
        self.duration_sum += beat.duration_sum
        self.body_in += beat.body_in
        self.body_out += beat.body_out


def _add(total: list[int], more: Iterable[int]) -> None:
    for i, value in enumerate(more):
        total[i] += value


@dataclass(frozen=True)
class WorkerSample:
    slot: int
    generation: int
    beat: Beat | None
    rss: int | None


def render(tallies: Tallies, workers: Iterable[WorkerSample], generation: int, wanted: int) -> str:
    """The exposition page (text format 0.0.4)."""
    samples = list(workers)
    beats = [s.beat for s in samples if s.beat is not None]
    totals = Tallies(
        list(tallies.by_status), list(tallies.durations), tallies.duration_sum,
        tallies.body_in, tallies.body_out,
    )  # fmt: skip
    for beat in beats:
        totals.retire(beat)
    return "".join(
        [
            *_requests(totals),
            *_durations(totals),
            *_gauges(beats),
            *_family("preforkd_request_body_bytes_total", "counter",
                     "Request body bytes read by the application.", [("", totals.body_in)]),
            *_family("preforkd_response_body_bytes_total", "counter",
                     "Response body bytes sent.", [("", totals.body_out)]),
            *_family("preforkd_worker_restarts_total", "counter",
                     "Workers replaced, by reason.",
                     [(_labels(reason=r), tallies.restarts[r]) for r in RESTART_REASONS]),
            *_family("preforkd_worker_boot_failures_total", "counter",
                     "Workers that died before they were ready.", [("", tallies.boot_failures)]),
            *_family("preforkd_workers", "gauge", "Live worker processes.", [("", len(samples))]),
            *_family("preforkd_workers_wanted", "gauge", "Workers the master keeps running.",
                     [("", wanted)]),
            *_family("preforkd_generation", "gauge",
                     "The configuration generation being served (1, then +1 per reload).",
                     [("", generation)]),
            *_family("preforkd_worker_resident_memory_bytes", "gauge",
                     "Resident memory of each worker.",
                     [(_labels(worker=s.slot, generation=s.generation), s.rss)
                      for s in samples if s.rss is not None]),
            *_family("preforkd_master_start_time_seconds", "gauge",
                     "When the master started, in Unix time.", [("", tallies.started)]),
            *_family("preforkd_build_info", "gauge", "The running version.",
                     [(_labels(version=__version__), 1)]),
        ]
    )  # fmt: skip


def _requests(totals: Tallies) -> Iterator[str]:
    values = []
    for p, protocol in enumerate(PROTOCOLS):
        for c, status in enumerate(STATUS_CLASSES):
            count = totals.by_status[p * len(STATUS_CLASSES) + c]
            values.append((_labels(protocol=protocol, status=status), count))
    return _family(
        "preforkd_requests_total", "counter",
        "Requests answered by the application, by protocol and status class.", values,
    )  # fmt: skip


def _durations(totals: Tallies) -> Iterator[str]:
    name = "preforkd_request_duration_seconds"
    yield f"# HELP {name} Time from the application call to the end of its response.\n"
    yield f"# TYPE {name} histogram\n"
    cumulative = 0
    for bound, count in zip((*DURATION_BUCKETS, float("inf")), totals.durations, strict=True):
        cumulative += count
        yield f'{name}_bucket{{le="{_number(bound)}"}} {cumulative}\n'
    yield f"{name}_sum {_number(totals.duration_sum)}\n"
    yield f"{name}_count {cumulative}\n"


def _gauges(beats: list[Beat]) -> Iterator[str]:
    h2 = sum(b.h2_connections for b in beats)
    h1 = sum(b.connections for b in beats) - h2
    yield from _family(
        "preforkd_requests_in_flight", "gauge", "Application calls running.",
        [("", sum(b.in_flight for b in beats))],
    )  # fmt: skip
    yield from _family(
        "preforkd_connections", "gauge", "Open client connections, by protocol.",
        [(_labels(protocol="h1"), h1), (_labels(protocol="h2"), h2)],
    )  # fmt: skip


def _family(
    name: str, kind: str, help: str, values: Iterable[tuple[str, float | int | None]]
) -> Iterator[str]:
    yield f"# HELP {name} {help}\n# TYPE {name} {kind}\n"
    for labels, value in values:
        if value is not None:
            yield f"{name}{labels} {_number(value)}\n"


def _labels(**labels: object) -> str:
    inner = ",".join(f'{key}="{_escape(str(value))}"' for key, value in labels.items())
    return "{" + inner + "}"


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _number(value: float | int) -> str:
    if isinstance(value, int):
        return str(value)
    if value == float("inf"):
        return "+Inf"
    return repr(value)


def metrics_reply(head: str, page: Callable[[], str]) -> tuple[bytes, bool]:
    """The HTTP/1.1 response to one request head on the metrics listener, and whether
    to close the connection after it. Only ``GET /metrics`` (and ``HEAD``) is served."""
    request_line = head.split("\r\n", 1)[0]
    parts = request_line.split(" ")
    if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
        return _response("400 Bad Request", "text/plain", b"bad request\n", True), True
    method, target, version = parts
    close = version == "HTTP/1.0" or "\r\nconnection: close" in head.lower()
    if target.split("?", 1)[0] != "/metrics":
        body = b"not found: the metrics are at /metrics\n"
        return _response("404 Not Found", "text/plain", body, close), close
    if method not in ("GET", "HEAD"):
        return _response("405 Method Not Allowed", "text/plain", b"GET only\n", close), close
    body = page().encode()
    data = _response("200 OK", CONTENT_TYPE, body, close)
    if method == "HEAD":
        data = data[: len(data) - len(body)]
    return data, close


def _response(status: str, content_type: str, body: bytes, close: bool) -> bytes:
    head = (
        f"HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\n"
        f"Content-Length: {len(body)}\r\nConnection: {'close' if close else 'keep-alive'}\r\n\r\n"
    )
    return head.encode("latin-1") + body
