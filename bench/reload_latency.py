"""Save-to-served latency of ``preforkd --reload``: from the moment a source file is
written to the first response that comes from the new code.

    python bench/reload_latency.py [--runs 7]

Starts ``python -m preforkd APP --reload`` on 127.0.0.1 in a temporary directory,
then, for each run, rewrites the application's module with a new marker and polls
``GET /`` (fresh connections, every 2 ms) until the marker comes back. Prints each
run and the median. What it measures: the watcher noticing the change (inotify, then
watchfiles waits 50 ms for the burst of writes to end), the master re-reading the
configuration and forking a new worker, the worker importing the module, and the new
worker answering (the old one is retired once the new one is ready).
"""

from __future__ import annotations

import argparse
import http.client
import os
import re
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
APP = """\
MARKER = {marker!r}


def app(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [MARKER.encode()]
"""
POLL = 0.002
DEADLINE = 15.0
RETIRED = re.compile(r"retiring the older generation")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def fetch(port: int) -> str | None:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=1.0)
    try:
        conn.request("GET", "/", headers={"Connection": "close"})
        return conn.getresponse().read().decode()
    except OSError:
        return None  # e.g. refused by a worker that is retiring: poll again
    finally:
        conn.close()


def wait_until(condition: Callable[[], object], what: str) -> None:
    deadline = time.monotonic() + DEADLINE
    while not condition():
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out waiting for {what}")
        time.sleep(POLL)


def retired(log_path: Path) -> int:
    """How many generations have been retired so far (one per reload)."""
    return len(RETIRED.findall(log_path.read_text()))


def measure(port: int, module: Path, marker: str) -> float:
    """Seconds from the write of ``marker`` to the first response carrying it."""
    started = time.perf_counter()
    module.write_text(APP.format(marker=marker))
    while True:
        if fetch(port) == marker:
            return time.perf_counter() - started
        if time.perf_counter() - started > DEADLINE:
            raise SystemExit(f"marker {marker!r} never served")
        time.sleep(POLL)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=7)
    args = parser.parse_args()
    port = free_port()
    with tempfile.TemporaryDirectory(prefix="preforkd-reload-") as tmp:
        site = Path(tmp)
        module = site / "latencyapp.py"
        module.write_text(APP.format(marker="start"))
        log_path = site / "preforkd.log"
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        with open(log_path, "wb") as log:
            server = subprocess.Popen(
                [sys.executable, "-m", "preforkd", "latencyapp:app", "--reload",
                 "--bind", f"127.0.0.1:{port}"],
                cwd=site, env=env, stdout=log, stderr=subprocess.STDOUT,
            )  # fmt: skip
        try:
            wait_until(lambda: "reload: watching" in log_path.read_text(), "the watcher")
            wait_until(lambda: fetch(port) == "start", "the first worker")
            results = []
            for run in range(1, args.runs + 1):
                seconds = measure(port, module, f"run-{run}-{time.time_ns()}")
                results.append(seconds)
                print(f"run {run}: {seconds * 1000:7.1f} ms")
                wait_until(lambda: retired(log_path) >= run, "the old generation to retire")  # noqa: B023
        finally:
            server.send_signal(signal.SIGINT)
            server.wait(15)
    print(
        f"save-to-served latency over {len(results)} runs: median "
        f"{statistics.median(results) * 1000:.1f} ms (min {min(results) * 1000:.1f}, "
        f"max {max(results) * 1000:.1f})"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
