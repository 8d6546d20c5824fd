"""HTTP/2 memory: does a worker's RSS stay flat as long-lived connections serve requests?

    python bench/h2_memory.py [--warmup 100000] [--requests 800000] [--idle 1000]

Starts preforkd (one worker, the hello app, h2c on 127.0.0.1) and drives it with h2load:

0. first, on the fresh worker, ``--idle`` HTTP/2 connections opened, one request each,
   held open: the RSS they add, per connection (what one open connection costs);
1. a warm-up of ``--warmup`` requests (half on 10 connections, half on 100, 32 streams
   each), so that the peak of concurrent streams has been reached, then the RSS;
2. ``--requests`` more on runs of 10 connections, each connection serving 40,000
   requests (h2load -c 10 -n 400,000 per run), then the RSS;
3. ``--requests`` more on runs of 100 connections, then the RSS.

The issue-10 goal: RSS after 2 and after 3 within 5 MiB of RSS after 1. Prints one
table. Counts and sizes, not speed; only loopback; stops what it started, by PID.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import socket
import subprocess
import sys
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
PROJECT_DIR = BENCH_DIR.parent
sys.path.insert(0, str(PROJECT_DIR))

from bench.procs import raise_fd_limit, status_kib  # noqa: E402
from tests.integration.harness import free_port, wait_for  # noqa: E402

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
EMPTY_SETTINGS = b"\x00\x00\x00\x04\x00\x00\x00\x00\x00"
SETTINGS_ACK = b"\x00\x00\x00\x04\x01\x00\x00\x00\x00"


def h2load(port: int, requests: int, connections: int) -> None:
    done = subprocess.run(
        ["h2load", "-n", str(requests), "-c", str(connections), "-m", "32",
         f"http://127.0.0.1:{port}/"],
        capture_output=True, text=True, timeout=3600,
    )  # fmt: skip
    summary = [line for line in done.stdout.splitlines() if line.startswith("requests:")]
    if done.returncode or not summary or " 0 failed" not in summary[0]:
        raise SystemExit(f"h2load failed:\n{done.stdout}\n{done.stderr}")


def worker_rss(master: int) -> float:
    """The worker's RSS in MiB (the master's only child)."""
    children = Path(f"/proc/{master}/task/{master}/children").read_text().split()
    return status_kib(int(children[0]), "VmRSS") / 1024


def request_frames(stream_id: int) -> bytes:
    """A HEADERS frame for GET / on ``stream_id``: HPACK static-table indexes only."""
    block = bytes([0x82, 0x86, 0x84, 0x41, 0x09]) + b"127.0.0.1"  # GET, http, /, :authority
    head = len(block).to_bytes(3, "big") + bytes([0x01, 0x05]) + stream_id.to_bytes(4, "big")
    return head + block


def open_idle(port: int, count: int) -> list[socket.socket]:
    conns = []
    for _ in range(count):
        sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        sock.sendall(PREFACE + EMPTY_SETTINGS + SETTINGS_ACK + request_frames(1))
        conns.append(sock)
    for sock in conns:
        read_until_end_stream(sock)
    return conns


def read_until_end_stream(sock: socket.socket) -> None:
    """Read frames until a DATA or HEADERS frame with END_STREAM on stream 1."""
    buffer = b""
    while True:
        while len(buffer) >= 9:
            length = int.from_bytes(buffer[:3], "big")
            if len(buffer) < 9 + length:
                break
            kind, flags = buffer[3], buffer[4]
            stream = int.from_bytes(buffer[5:9], "big") & 0x7FFFFFFF
            buffer = buffer[9 + length :]
            if stream and kind in (0, 1) and flags & 0x1:
                return
        data = sock.recv(65536)
        if not data:
            raise SystemExit("an idle connection was closed")
        buffer += data


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--warmup", type=int, default=100_000)
    parser.add_argument("--requests", type=int, default=800_000)
    parser.add_argument("--idle", type=int, default=1000)
    parser.add_argument("--preforkd", default=f"{sys.executable} -m preforkd",
                        help="the command that runs preforkd (another checkout's)")  # fmt: skip
    args = parser.parse_args()
    if not shutil.which("h2load"):
        raise SystemExit("h2load not found (apt-get install nghttp2-client)")
    raise_fd_limit(args.idle * 2 + 1024)
    port = free_port()
    argv = [*args.preforkd.split(), "-w", "1", "-b", f"127.0.0.1:{port}", "--control-socket",
            "off", "--worker-connections", str(args.idle + 200), "apps:hello"]  # fmt: skip
    server = subprocess.Popen(
        argv, cwd=BENCH_DIR, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        env={**os.environ, "PYTHONPATH": f"{BENCH_DIR}{os.pathsep}{PROJECT_DIR}"},
        start_new_session=True,
    )  # fmt: skip
    rows: list[tuple[str, str]] = []
    try:
        wait_for(lambda: _answers(port), timeout=30, what="preforkd to answer")
        before = worker_rss(server.pid)
        idle = open_idle(port, args.idle)
        per_conn = (worker_rss(server.pid) - before) * 1024 / args.idle
        for sock in idle:
            sock.close()
        h2load(port, args.warmup // 2, 10)
        h2load(port, args.warmup - args.warmup // 2, 100)
        base = worker_rss(server.pid)
        rows.append((f"after a warm-up of {args.warmup:,} requests", f"{base:.1f} MiB"))
        for connections, per_run in ((10, 400_000), (100, 800_000)):
            left = args.requests
            while left > 0:
                h2load(port, min(per_run, left), connections)
                left -= per_run
            rss = worker_rss(server.pid)
            what = f"after {args.requests:,} more on runs of {connections} connections"
            rows.append((what, f"{rss:.1f} MiB ({rss - base:+.1f})"))
        rows.append(
            (f"{args.idle} idle HTTP/2 connections (fresh worker)", f"{per_conn:.1f} KiB each")
        )
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(30)
    width = max(len(what) for what, _ in rows)
    print(f"{'worker RSS':<{width}}  value")
    for what, value in rows:
        print(f"{what:<{width}}  {value}")
    return 0


def _answers(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=2) as sock:
            sock.sendall(PREFACE + EMPTY_SETTINGS + SETTINGS_ACK + request_frames(1))
            read_until_end_stream(sock)
            return True
    except (OSError, SystemExit):
        return False


if __name__ == "__main__":
    sys.exit(main())
