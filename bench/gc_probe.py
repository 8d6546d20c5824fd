"""The benchmark apps, plus a record of the cyclic garbage collector's work in the worker.

``hotspots.py --gc`` serves ``gc_probe:hello`` (or big, echo...) instead of ``apps:hello``
with BENCH_GC_STATS naming a file: every collection is timed through ``gc.callbacks``, and
the totals per generation (collections, seconds, objects collected) are written to that
file at most twice a second. Objects the collector frees are objects in reference cycles:
refcounting alone would have freed the others as soon as the request was done.
"""

from __future__ import annotations

import gc
import json
import os
import time
from typing import Any

from apps import application, big, blocking, echo, hello

__all__ = ["application", "big", "blocking", "echo", "hello"]

WRITE_EVERY = 0.5  # seconds


class GCStats:
    def __init__(self, path: str) -> None:
        self.path = path
        self.collections = [0, 0, 0]
        self.seconds = [0.0, 0.0, 0.0]
        self.collected = [0, 0, 0]
        self.longest = [0.0, 0.0, 0.0]  # seconds: the loop stood still this long
        self._started = 0.0
        self._written = time.monotonic()

    def __call__(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            self._started = time.perf_counter()
            return
        generation = info["generation"]
        took = time.perf_counter() - self._started
        self.collections[generation] += 1
        self.seconds[generation] += took
        self.longest[generation] = max(self.longest[generation], took)
        self.collected[generation] += info["collected"]
        now = time.monotonic()
        if now - self._written >= WRITE_EVERY:
            self._written = now
            self.write()

    def write(self) -> None:
        data = {"collections": self.collections, "seconds": self.seconds}
        data |= {"collected": self.collected, "longest": self.longest, "pid": os.getpid()}
        with open(self.path, "w") as f:
            json.dump(data, f)


if path := os.environ.get("BENCH_GC_STATS"):
    gc.callbacks.append(GCStats(path))
