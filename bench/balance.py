"""How evenly two workers share the load (issue 12), run standalone.

    python bench/balance.py                                  # this checkout
    python bench/balance.py --seconds 5 --rounds 3 \\
        --compare before=/work/main:/work/venv/bin/python   # beside another checkout

For each checkout it starts ``preforkd --workers 2`` (a fresh server per measurement, on
127.0.0.1) with bench/apps.py's hello app and reports, per worker:

- ``burst``: 64 connections opened at once, one request on each, then held: the
  connections each worker holds (what a client's connection pool gets).
- ``keep-alive``: wrk, 64 keep-alive connections: the connections each worker holds
  in the middle of the run and the requests each served.
- ``new-conn``: wrk with ``Connection: close``, 64 clients: the requests (= connections)
  each worker served.
- ``2w/1w``: the keep-alive requests per second of ``--workers 2`` over ``--workers 1``.

"spread" is max/min of the per-worker figures (1.00 is perfectly even). Connections are
counted from /proc (the established TCP sockets each worker process holds on the port),
requests from the workers' process titles ("1.2k req": about two significant digits, enough
for a ratio), so the old code, which knows nothing of this script, is measured the same way.

The machine this runs on may be shared and noisy: a throughput ratio from one short run is
a rough figure; the spreads are far less sensitive to noise. On a 2-CPU machine wrk itself
takes most of a CPU, so ``2w/1w`` cannot approach 2 there; it says whether the second
worker adds anything, not how far two cores scale. Linux only (/proc).
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

BENCH_DIR = Path(__file__).resolve().parent
PROJECT_DIR = BENCH_DIR.parent
CONNS = 64
T = TypeVar("T")
_TITLE = re.compile(r"preforkd: worker \d+ .*· (\d+) conns · \d+ busy · ([\d.]+)([kM]?) req")


@dataclass(frozen=True)
class Checkout:
    name: str
    source: Path  # put first on PYTHONPATH: the preforkd package that runs
    python: str


@dataclass
class Result:
    figures: dict[str, list[list[int]]] = field(default_factory=dict)  # what -> rounds
    rates: dict[int, list[float]] = field(default_factory=dict)  # workers -> rps per round


# --- the server ----------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def preforkd(checkout: Checkout, workers: int) -> Iterator[tuple[int, list[int]]]:
    """A running preforkd: (its port, its workers' pids). Stopped by its pid afterwards."""
    port = free_port()
    argv = [checkout.python, "-m", "preforkd", "--workers", str(workers)]
    argv += ["--bind", f"127.0.0.1:{port}", "--graceful-timeout", "3", "apps:hello"]
    env = {**os.environ, "PYTHONPATH": f"{checkout.source}{os.pathsep}{BENCH_DIR}"}
    proc = subprocess.Popen(argv, env=env, cwd=BENCH_DIR, stdin=subprocess.DEVNULL,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    try:
        pids = _wait(lambda: _serving(proc.pid, port, workers), "preforkd to serve")
        yield port, pids
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


def _serving(master: int, port: int, workers: int) -> list[int] | None:
    try:
        pids = [int(p) for p in Path(f"/proc/{master}/task/{master}/children").read_text().split()]
    except OSError:
        return None
    if len(pids) != workers or any(_title(p) is None for p in pids):
        return None
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=2) as sock:
            sock.sendall(b"GET / HTTP/1.1\r\nHost: b\r\nConnection: close\r\n\r\n")
            return pids if sock.recv(16).startswith(b"HTTP/1.1 200") else None
    except OSError:
        return None


def _wait(condition: Callable[[], T | None], what: str, timeout: float = 30.0) -> T:
    deadline = time.monotonic() + timeout
    while (result := condition()) is None:
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out waiting for {what}")
        time.sleep(0.05)  # polling a deadline loop
    return result


# --- what each worker holds and served -----------------------------------------------------


def _title(pid: int) -> tuple[int, int] | None:
    """(connections, requests) from a worker's process title, None before its first one."""
    try:
        text = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return None
    m = _TITLE.search(text)
    if m is None:
        return None
    scale = {"": 1, "k": 1000, "M": 1_000_000}[m.group(3)]
    return int(m.group(1)), round(float(m.group(2)) * scale)


def established(pids: list[int], port: int) -> list[int]:
    """Established TCP connections on ``port`` each process holds (from /proc)."""
    ours: set[str] = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with open(table) as f:
            for line in f.readlines()[1:]:
                cols = line.split()
                if int(cols[1].rsplit(":", 1)[1], 16) == port and cols[3] == "01":
                    ours.add(cols[9])
    counts = []
    for pid in pids:
        n = 0
        for fd in os.listdir(f"/proc/{pid}/fd"):
            try:
                link = os.readlink(f"/proc/{pid}/fd/{fd}")
            except OSError:
                continue
            if link.startswith("socket:[") and link[8:-1] in ours:
                n += 1
        counts.append(n)
    return counts


def requests_served(pids: list[int]) -> list[int]:
    """Each worker's requests, once every title shows its connections closed."""

    def settled() -> list[int] | None:
        titles = [_title(p) for p in pids]
        if any(t is None or t[0] for t in titles):
            return None
        return [t[1] for t in titles if t is not None]

    return _wait(settled, "the workers' titles to settle", timeout=10.0)


# --- loads ---------------------------------------------------------------------------------


def burst(port: int, pids: list[int]) -> list[int]:
    """Open CONNS connections at once, a request on each, count who holds them."""
    socks = []
    for _ in range(CONNS):
        sock = socket.socket()
        sock.setblocking(False)
        sock.connect_ex(("127.0.0.1", port))
        socks.append(sock)
    try:
        for sock in socks:
            sock.setblocking(True)
            sock.settimeout(10)
            sock.sendall(b"GET / HTTP/1.1\r\nHost: b\r\n\r\n")
        for sock in socks:
            if not sock.recv(4096).startswith(b"HTTP/1.1 200"):
                raise RuntimeError("a burst connection got no answer")
        return _wait(lambda: _if_total(established(pids, port), CONNS), "the burst's sockets")
    finally:
        for sock in socks:
            sock.close()


def _if_total(counts: list[int], total: int) -> list[int] | None:
    return counts if sum(counts) == total else None


def wrk(port: int, seconds: float, close: bool) -> subprocess.Popen[str]:
    argv = ["wrk", "-t1", f"-c{CONNS}", f"-d{max(1, round(seconds))}s"]
    if close:
        argv += ["-H", "Connection: close"]
    return subprocess.Popen([*argv, f"http://127.0.0.1:{port}/"], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)  # fmt: skip


def wrk_rate(out: str) -> float:
    m = re.search(r"Requests/sec:\s+([\d.]+)", out)
    if m is None:
        raise RuntimeError(f"wrk said:\n{out}")
    return float(m.group(1))


def keep_alive(port: int, pids: list[int], seconds: float) -> tuple[list[int], list[int]]:
    load = wrk(port, seconds, close=False)
    time.sleep(seconds / 2)  # sample the connections in the middle of the run
    conns = established(pids, port)
    out, _ = load.communicate(timeout=seconds + 30)
    wrk_rate(out)
    return conns, requests_served(pids)


def new_conn(port: int, pids: list[int], seconds: float) -> list[int]:
    out, _ = wrk(port, seconds, close=True).communicate(timeout=seconds + 30)
    wrk_rate(out)
    return requests_served(pids)


def measure(checkout: Checkout, seconds: float, result: Result) -> None:
    def add(what: str, counts: list[int]) -> None:
        result.figures.setdefault(what, []).append(counts)

    with preforkd(checkout, 2) as (port, pids):
        add("burst: connections", burst(port, pids))
    with preforkd(checkout, 2) as (port, pids):
        conns, reqs = keep_alive(port, pids, seconds)
        add("keep-alive: connections", conns)
        add("keep-alive: requests", reqs)
    with preforkd(checkout, 2) as (port, pids):
        add("new-conn: requests", new_conn(port, pids, seconds))
    for workers in (1, 2):
        with preforkd(checkout, workers) as (port, _):
            out, _ = wrk(port, seconds, close=False).communicate(timeout=seconds + 30)
            result.rates.setdefault(workers, []).append(wrk_rate(out))


# --- the report ----------------------------------------------------------------------------


def spread(counts: list[int]) -> float:
    return max(counts) / min(counts) if min(counts) else float("inf")


def report(results: dict[str, Result]) -> str:
    names = list(results)
    lines = ["| measure | " + " | ".join(names) + " |", "|---" * (len(names) + 1) + "|"]
    whats = list(next(iter(results.values())).figures)
    for what in whats:
        cells = []
        for name in names:
            rounds = results[name].figures[what]
            worst = max(rounds, key=spread)
            cells.append(
                " ".join("/".join(map(str, r)) for r in rounds)
                + f" (worst spread {spread(worst):.2f})"
            )
        lines.append(f"| {what} | " + " | ".join(cells) + " |")
    ratios = []
    for name in names:
        rates = results[name].rates
        one, two = statistics.median(rates[1]), statistics.median(rates[2])
        ratios.append(f"{two / one:.2f}x ({two:,.0f} / {one:,.0f} req/s)")
    lines.append("| 2 workers ÷ 1 worker, keep-alive | " + " | ".join(ratios) + " |")
    return "\n".join(lines)


def _checkout(text: str) -> Checkout:
    name, _, rest = text.partition("=")
    source, _, python = rest.partition(":")
    return Checkout(name, Path(source).resolve(), python or sys.executable)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=5.0, help="each wrk run (default 5)")
    parser.add_argument("--rounds", type=int, default=1, help="interleaved rounds (default 1)")
    parser.add_argument("--name", default="this checkout", help="this checkout's column")
    parser.add_argument(
        "--compare",
        action="append",
        default=[],
        type=_checkout,
        metavar="NAME=DIR[:PYTHON]",
        help="another checkout, side by side",
    )
    args = parser.parse_args(argv)
    checkouts = [*args.compare, Checkout(args.name, PROJECT_DIR, sys.executable)]
    results = {c.name: Result() for c in checkouts}
    for _ in range(args.rounds):
        for checkout in checkouts:  # interleaved: A B A B, so drift hits both alike
            measure(checkout, args.seconds, results[checkout.name])
    print(f"--workers 2, {CONNS} connections, {args.seconds:g} s per wrk run, "
          f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}\n")  # fmt: skip
    print(report(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
