"""What one worker counts for ``preforkd status``, ``preforkd top`` and the metrics.

App threads call :meth:`RequestStats.record` as each application call ends (under the
worker's lock, which they take then anyway); the loop thread reads the counters at each
tick and publishes them in the worker's heartbeat slot (``worker/watchdog.py``), where
the master reads them. Counters only grow: the master turns them into rates and adds a
retired worker's last counts to its totals.
"""

from __future__ import annotations

import bisect
from collections import deque
from typing import TYPE_CHECKING

from preforkd.heartbeat import DURATION_BUCKETS, STATUS_CLASSES

if TYPE_CHECKING:
    from preforkd.wsgi.bridge import WSGICycle

RATE_WINDOW = 5.0  # seconds of history behind the "requests per second" figure
_CLASSES = len(STATUS_CLASSES)


class RequestStats:
    """Requests by protocol and status class, durations, body bytes."""

    __slots__ = ("body_in", "body_out", "by_status", "duration_sum", "durations")

    def __init__(self) -> None:
        self.by_status = [0] * (2 * _CLASSES)  # h1 1xx..5xx, then h2 1xx..5xx
        self.durations = [0] * (len(DURATION_BUCKETS) + 1)
        self.duration_sum = 0.0
        self.body_in = 0
        self.body_out = 0

    def record(self, cycle: WSGICycle) -> None:
        """Count one finished application call (the caller holds the worker's lock)."""
        status = cycle.status
        digit = ord(status[0]) - 49 if status else 4  # "1".."5" -> 0..4; none: a 500
        if not 0 <= digit < _CLASSES:
            digit = 4
        h2 = cycle.request.http_version == "2"
        self.by_status[h2 * _CLASSES + digit] += 1
        duration = cycle.duration
        self.durations[bisect.bisect_left(DURATION_BUCKETS, duration)] += 1
        self.duration_sum += duration
        stream = cycle.environ.get("wsgi.input")
        self.body_in += getattr(stream, "bytes_read", 0)
        self.body_out += cycle.bytes_sent


class RateMeter:
    """Requests per second over the last RATE_WINDOW seconds, from the tick's samples."""

    def __init__(self, window: float = RATE_WINDOW) -> None:
        self.window = window
        self._samples: deque[tuple[float, int]] = deque()

    def update(self, now: float, requests: int) -> float:
        samples = self._samples
        samples.append((now, requests))
        while len(samples) > 2 and now - samples[1][0] >= self.window:
            samples.popleft()
        first_time, first_count = samples[0]
        elapsed = now - first_time
        return (requests - first_count) / elapsed if elapsed > 0 else 0.0
