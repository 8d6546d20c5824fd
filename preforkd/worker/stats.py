"""What one worker counts for ``preforkd status``, ``preforkd top`` and the metrics.

App threads call :meth:`RequestStats.record` as each application call ends (under the
worker's lock, which they take then anyway); the loop thread reads the counters at each
tick and publishes them in the worker's heartbeat slot (``worker/watchdog.py``), where
the master reads them. Counters only grow: the master turns them into rates and adds a
retired worker's last counts to its totals.
"""

from __future__ import annotations

from bisect import bisect_left
from collections import deque
from typing import TYPE_CHECKING

from preforkd.heartbeat import DURATION_BUCKETS, STATUS_CLASSES

if TYPE_CHECKING:
    from preforkd.wsgi.bridge import WSGICycle

RATE_WINDOW = 5.0  # seconds of history behind the "requests per second" figure
_CLASSES = len(STATUS_CLASSES)
_INDEX = {str(digit + 1): digit for digit in range(_CLASSES)}


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
        """Count one finished application call (the caller holds the worker's lock).

        On every request's path: a handful of operations (about half a microsecond)."""
        status = cycle.status
        # "1xx".."5xx" -> 0..4 (+5 for HTTP/2); no status (the app failed first): a 500.
        index = _INDEX.get(status[0] if status else "5", 4)
        if cycle.request.http_version == "2":
            index += _CLASSES
        self.by_status[index] += 1
        duration = cycle.duration
        self.durations[bisect_left(DURATION_BUCKETS, duration)] += 1
        self.duration_sum += duration
        # The app may have replaced or removed wsgi.input (environ is its to change).
        self.body_in += getattr(cycle.environ.get("wsgi.input"), "bytes_read", 0)
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
