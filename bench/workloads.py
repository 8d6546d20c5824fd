"""Workloads: what load each one puts on a server, and reading the load generators' output.

Throughput workloads run ``wrk`` (HTTP/1.1) or ``h2load`` (HTTP/2) with one thread, pinned
to the load generator's CPU when the configuration pins. Two workloads are not about
throughput: ``idle-10k`` holds many idle connections (see idle_conns.py) and ``startup``
times a cold start and a worker respawn (see probes.py).
"""

from __future__ import annotations

import re
import subprocess
from dataclasses import dataclass
from pathlib import Path

from procs import Server
from servers import DATA_DIR

BENCH_DIR = Path(__file__).resolve().parent
POST_SCRIPT = BENCH_DIR / "post1m.lua"
HELLO = "Hello, world!"


@dataclass(frozen=True)
class Workload:
    name: str
    desc: str
    kind: str  # "load", "idle" or "startup"
    app: str = "apps:hello"
    path: str = "/"
    proto: str = "h1"  # "h1", "h2c" or "tls"
    conns: int = 64
    streams: int = 1  # HTTP/2 streams per connection
    post: bool = False  # send the 1 MiB body
    close: bool = False  # "Connection: close" on every request
    expect: str | None = HELLO  # expected body
    expect_len: int | None = None  # or its expected length
    workers: int | None = None  # overrides the configuration's number of workers
    keep_alive: int | None = None  # keep-alive timeout servers are given, seconds

    @property
    def tool(self) -> str:
        return "wrk" if self.proto == "h1" else "h2load"


WORKLOADS: dict[str, Workload] = {
    w.name: w
    for w in (
        Workload("h1-hello", "HTTP/1.1 keep-alive, 13-byte answer, 64 connections", "load"),
        Workload(
            "h1-close",
            "HTTP/1.1, a new connection per request (Connection: close), 64 clients",
            "load",
            close=True,
        ),
        Workload(
            "h1-64k",
            "HTTP/1.1 keep-alive, 64 KiB answer, 64 connections",
            "load",
            app="apps:big",
            path="/64k",
            expect=None,
            expect_len=65536,
        ),
        Workload(
            "h1-post1m",
            "HTTP/1.1 keep-alive, 1 MiB upload read by the app, 16 connections",
            "load",
            app="apps:echo",
            path="/echo",
            conns=16,
            post=True,
            expect="1048576",
        ),
        Workload(
            "h2c-hello",
            "HTTP/2 cleartext (prior knowledge), 16 connections x 32 streams",
            "load",
            proto="h2c",
            conns=16,
            streams=32,
        ),
        Workload(
            "h2c-post1m",
            "HTTP/2 cleartext, 1 MiB upload read by the app, 16 connections x 4 streams",
            "load",
            app="apps:echo",
            path="/echo",
            proto="h2c",
            conns=16,
            streams=4,
            post=True,
            expect="1048576",
        ),
        Workload(
            "h2tls-hello",
            "HTTP/2 over TLS (ALPN h2, P-256), 16 connections x 32 streams",
            "load",
            proto="tls",
            conns=16,
            streams=32,
        ),
        Workload(
            "h1-blocking",
            "HTTP/1.1 keep-alive, app sleeps 10 ms per request, 128 connections",
            "load",
            app="apps:blocking",
            path="/sleep",
            conns=128,
        ),
        Workload(
            "idle-10k",
            "10,000 idle keep-alive connections on one worker: memory, errors",
            "idle",
            workers=1,
            keep_alive=120,
        ),
        Workload("startup", "start to first answer; worker killed to first answer", "startup"),
    )
}
DEFAULT_WORKLOADS = tuple(WORKLOADS)


# --- load generators ---------------------------------------------------------------------------


@dataclass
class LoadResult:
    rps: float | None = None
    requests: int | None = None
    errors: int = 0
    p50_ms: float | None = None
    p99_ms: float | None = None
    elapsed_s: float | None = None
    output: str = ""


def url(w: Workload, port: int) -> str:
    scheme = "https" if w.proto == "tls" else "http"
    return f"{scheme}://127.0.0.1:{port}{w.path}"


def load_command(w: Workload, port: int, seconds: float, requests: int, log: Path) -> list[str]:
    """wrk runs for ``seconds``; h2load for ``requests`` (see H2Sizer)."""
    if w.tool == "wrk":
        argv = ["wrk", "-t1", f"-c{w.conns}", f"-d{max(1, round(seconds))}s", "--latency"]
        if w.close:
            argv += ["-H", "Connection: close"]
        if w.post:
            argv += ["-s", str(POST_SCRIPT)]
        return [*argv, url(w, port)]
    argv = ["h2load", "-t1", f"-c{w.conns}", f"-m{w.streams}", f"-n{requests}"]
    argv += [f"--log-file={log}"]
    if w.post:  # the body file bench/environment.py writes beside the other data
        argv += ["-d", str(DATA_DIR / "body1m.bin")]
    return [*argv, url(w, port)]


def run_load(argv: list[str], tool: str, log: Path, limit: float) -> LoadResult:
    log.unlink(missing_ok=True)
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=limit)
        out = done.stdout + done.stderr
    except subprocess.TimeoutExpired as exc:
        out = exc.stdout.decode(errors="replace") if isinstance(exc.stdout, bytes) else ""
        out += f"\n[load generator stopped after {limit:.0f} s]"
    result = parse_wrk(out) if tool == "wrk" else parse_h2load(out, log)
    result.output = out
    log.unlink(missing_ok=True)
    return result


_UNITS_MS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60000.0}


def parse_wrk(out: str) -> LoadResult:
    r = LoadResult()
    if m := re.search(r"Requests/sec:\s+([\d.]+)", out):
        r.rps = float(m.group(1))
    if m := re.search(r"(\d+) requests in ([\d.]+)(\w+),", out):
        r.requests = int(m.group(1))
    for pct, attr in (("50", "p50_ms"), ("99", "p99_ms")):
        if m := re.search(rf"^\s+{pct}%\s+([\d.]+)(us|ms|s|m)\s*$", out, re.M):
            setattr(r, attr, float(m.group(1)) * _UNITS_MS[m.group(2)])
    if m := re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out):
        r.errors += sum(int(g) for g in m.groups())
    if m := re.search(r"Non-2xx or 3xx responses: (\d+)", out):
        r.errors += int(m.group(1))
    return r


def parse_h2load(out: str, log: Path) -> LoadResult:
    r = LoadResult()
    if m := re.search(r"finished in ([\d.]+)(ms|s), ([\d.]+) req/s", out):
        r.elapsed_s = float(m.group(1)) / (1000 if m.group(2) == "ms" else 1)
        r.rps = float(m.group(3))
    pattern = r"requests: \d+ total, \d+ started, (\d+) done, \d+ succeeded, (\d+) failed, "
    if m := re.search(pattern + r"(\d+) errored, (\d+) timeout", out):
        r.requests = int(m.group(1))
        r.errors = sum(int(g) for g in m.groups()[1:])
    if m := re.search(r"status codes: \d+ 2xx, (\d+) 3xx, (\d+) 4xx, (\d+) 5xx", out):
        r.errors += sum(int(g) for g in m.groups())
    # h2load prints no percentiles; its log has one line per request: time, status, µs.
    latencies = []
    try:
        with open(log) as f:
            for line in f:
                parts = line.split("\t")
                if len(parts) >= 3 and parts[1].startswith("2"):
                    latencies.append(int(parts[2]))
    except OSError:
        pass
    if latencies:
        latencies.sort()
        n = len(latencies)
        r.p50_ms = latencies[n // 2] / 1000
        r.p99_ms = latencies[min(n - 1, n * 99 // 100)] / 1000
    return r


class Loader:
    """Runs a workload's load generator against one server: warm-up, then measured runs.

    h2load's timed mode (-D) waits for every connection to close after its timer, which
    some servers never do; so h2load runs a request count sized from the warm-up's rate."""

    def __init__(self, w: Workload, port: int, seconds: float, pin: str | None, scratch: Path):
        self.w, self.port, self.seconds, self.pin = w, port, seconds, pin
        self.log = scratch / "h2load.log"
        self.requests = max(200, w.conns * w.streams * 4)

    def _run(self, seconds: float) -> tuple[list[str], LoadResult]:
        argv = load_command(self.w, self.port, seconds, self.requests, self.log)
        if self.pin is not None:
            argv = ["taskset", "-c", self.pin, *argv]
        return argv, run_load(argv, self.w.tool, self.log, limit=max(30.0, seconds * 6))

    def warm_up(self, seconds: float, server: Server) -> bool:
        """Discarded load; for h2load, also size the measured run. False if it failed."""
        if self.w.tool == "wrk":
            if seconds > 0:
                self._run(seconds)
            return not server.exited()
        for _ in range(3):
            _, r = self._run(seconds)
            if not r.rps or server.exited():
                return False
            if (r.elapsed_s or 0) >= seconds * 0.5:
                break
            self.requests = max(self.requests, int(r.rps * max(seconds, 0.5)))
        self.requests = max(self.requests, int((r.rps or 0) * self.seconds))
        return True

    def measure(self) -> tuple[list[str], LoadResult]:
        return self._run(self.seconds)
