"""The HTTP/1.1 per-request path in one process, without sockets, threads or a loop.

    python bench/h1_path.py                      # µs per request (noisy on a shared machine)
    python bench/h1_path.py --profile            # cProfile, sorted by own time
    python bench/h1_path.py --callgrind          # instructions per request (deterministic)
    python bench/h1_path.py --part parse         # one piece: connection, parse, environ, frame

A keep-alive request goes through what a worker does with it: ``H1Protocol.data_received``
(the H1 core, routing, ``Exchange``, environ, ``WSGICycle``), the app (``apps.hello``),
the handoff back (``Exchange.send``: framing, one ``transport.write``) and
``response_complete``. What it leaves out is measured elsewhere: the event loop and the
socket calls (uvloop), and the hop to an application thread and back (the default; here
the app runs inline, as with ``--app-on-loop``). ``--callgrind`` reruns this script under
``valgrind --tool=callgrind`` with N and 2N requests and prints the difference per request,
which does not depend on the machine's load: use it to compare before/after a change.
"""

from __future__ import annotations

import argparse
import cProfile
import os
import pstats
import re
import subprocess
import sys
import tempfile
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH_DIR.parent))
sys.path.insert(0, str(BENCH_DIR))

import apps  # noqa: E402

from preforkd.proto.h1 import H1Connection, H1Limits  # noqa: E402
from preforkd.proto.h1_response import ResponseFramer  # noqa: E402
from preforkd.worker.connection import H1Protocol, Listening  # noqa: E402
from preforkd.worker.pool import AppThreads  # noqa: E402
from preforkd.worker.state import ConnectionSettings, WorkerState  # noqa: E402
from preforkd.wsgi.environ import (  # noqa: E402
    ConnectionInfo,
    ProxyTrust,
    build_environ,
    environ_template,
)
from preforkd.wsgi.input import EMPTY_INPUT  # noqa: E402

# What wrk sends (h2load adds "accept" and a different user-agent; the cost is alike).
REQUEST = b"GET / HTTP/1.1\r\nHost: 127.0.0.1:18900\r\nUser-Agent: wrk\r\n\r\n"


class Transport:
    """Enough of an asyncio transport for H1Protocol: keeps the last write."""

    def __init__(self) -> None:
        self.last = b""
        self.writes = 0

    def write(self, data: bytes) -> None:
        self.last = data
        self.writes += 1

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return ("127.0.0.1", 40000) if name == "peername" else default

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass

    def close(self) -> None:
        pass

    def is_closing(self) -> bool:
        return False


def make_state(queue: deque[tuple[Callable[..., Any], tuple[Any, ...]]]) -> WorkerState:
    def call_soon(fn: Callable[..., Any], *args: Any) -> None:
        queue.append((fn, args))

    settings = ConnectionSettings(
        limits=H1Limits(), keep_alive=5.0, header_timeout=10.0, multiprocess=False, multithread=True
    )
    return WorkerState(
        app=apps.hello,
        settings=settings,
        executor=AppThreads(1),
        proxy=ProxyTrust(["127.0.0.1"]),
        call_soon_threadsafe=call_soon,
        call_soon=call_soon,
        app_on_loop=True,
    )


def full_path() -> Callable[[], None]:
    queue: deque[tuple[Callable[..., Any], tuple[Any, ...]]] = deque()
    state = make_state(queue)
    info = ConnectionInfo("127.0.0.1", "18900", "", "", "http", False)
    listening = Listening(True, "127.0.0.1", "18900", False, environ_template(info))
    conn = H1Protocol(state, listening=listening)
    transport = Transport()
    conn.connection_made(transport)  # type: ignore[arg-type]
    popleft = queue.popleft

    def one() -> None:
        conn.data_received(REQUEST)
        while queue:
            fn, args = popleft()
            fn(*args)

    one()
    assert transport.last.startswith(b"HTTP/1.1 200 OK\r\n"), transport.last
    return one


def new_connection() -> Callable[[], None]:
    """A connection per request: connection_made, one "Connection: close" request and its
    response, connection_lost (accepting and the transport are uvloop's, not counted)."""
    queue: deque[tuple[Callable[..., Any], tuple[Any, ...]]] = deque()
    state = make_state(queue)
    info = ConnectionInfo("127.0.0.1", "18900", "", "", "http", False)
    listening = Listening(True, "127.0.0.1", "18900", False, environ_template(info))
    protocols = frozenset(("h1", "h2"))  # the default: cleartext h2 sniffing is on
    request = REQUEST.replace(b"\r\n\r\n", b"\r\nConnection: close\r\n\r\n")
    popleft = queue.popleft

    def one() -> None:
        conn = H1Protocol(state, protocols=protocols, listening=listening)
        transport = Transport()
        conn.connection_made(transport)  # type: ignore[arg-type]
        conn.data_received(request)
        while queue:
            fn, args = popleft()
            fn(*args)
        conn.connection_lost(None)

    one()
    return one


def parse_only() -> Callable[[], None]:
    receive = H1Connection().receive_data
    return lambda: receive(REQUEST) and None


def environ_only() -> Callable[[], None]:
    request = H1Connection().receive_data(REQUEST)[0]
    info = ConnectionInfo("127.0.0.1", "18900", "127.0.0.1", "40000", "http", True)
    template = environ_template(info)
    proxy = ProxyTrust(["127.0.0.1"])

    def one() -> None:
        build_environ(request, info, EMPTY_INPUT, proxy, template=template)  # type: ignore[arg-type]

    return one


def frame_only() -> Callable[[], None]:
    request = H1Connection().receive_data(REQUEST)[0]

    def one() -> None:
        framer = ResponseFramer(request, b"Fri, 04 Dec 2026 05:00:00 GMT")  # type: ignore[arg-type]
        b"".join((framer.head("200 OK", apps.HELLO_HEADERS), framer.body(apps.HELLO), framer.end()))

    return one


PARTS = {
    "full": full_path,
    "connection": new_connection,
    "parse": parse_only,
    "environ": environ_only,
    "frame": frame_only,
}


def callgrind(args: argparse.Namespace) -> None:
    """Instructions per request: (Ir(2N) - Ir(N)) / N, so start-up cancels out."""

    def instructions(n: int) -> int:
        with tempfile.TemporaryDirectory() as tmp:
            argv = ["valgrind", "--tool=callgrind", f"--callgrind-out-file={tmp}/out"]
            argv += [sys.executable, __file__, "--part", args.part, "-n", str(n)]
            env = dict(os.environ, PYTHONHASHSEED="0")
            done = subprocess.run(argv, capture_output=True, text=True, env=env, check=True)
        found = re.search(r"Collected : (\d+)", done.stderr)
        assert found, done.stderr[-2000:]
        return int(found[1])

    n = args.n
    low, high = instructions(n), instructions(2 * n)
    print(f"{args.part}: {(high - low) / n:,.0f} instructions per request")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--part", choices=PARTS, default="full")
    p.add_argument("-n", type=int, default=2000, help="requests (2N more with --callgrind)")
    p.add_argument("--profile", action="store_true", help="cProfile, top functions by own time")
    p.add_argument("--callgrind", action="store_true", help="instructions per request")
    args = p.parse_args()
    if args.callgrind:
        callgrind(args)
        return
    one = PARTS[args.part]()
    if args.profile:
        profiler = cProfile.Profile()
        profiler.runcall(lambda: [one() for _ in range(args.n)])
        pstats.Stats(profiler).sort_stats("tottime").print_stats(30)
        return
    started = time.perf_counter()
    for _ in range(args.n):
        one()
    elapsed = time.perf_counter() - started
    print(f"{args.part}: {elapsed / args.n * 1e6:.2f} µs per request")


if __name__ == "__main__":
    main()
